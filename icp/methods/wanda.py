"""Wanda (Sun et al., 2023): score |W_ij| * ||X_j||_2, compared within each output row."""

from __future__ import annotations

import torch
from torch import nn

from .base import LayerPruner, PruneResult, apply_mask_and_round
from .masks import lowest_per_row_mask, nm_mask
from .pattern import Pattern

CHUNK_TOKENS = 4096  # tokens reduced at a time on the accelerator


class FeatureNorms:
    """Sum over the tokens seen of x_j^2 for every input feature j (fp64 accumulator); shared by
    the linears that read the same input."""

    def __init__(self, columns: int, device: torch.device | str) -> None:
        self.columns = columns
        self.squared = torch.zeros(columns, device=device, dtype=torch.float64)
        self.tokens = 0

    def add_batch(self, inputs: torch.Tensor) -> None:
        x = inputs.reshape(-1, self.columns)
        if x.is_cuda:  # one fp32 reduction per chunk: no fp64 (or fp32) copy of a whole batch's activations
            for chunk in x.split(CHUNK_TOKENS):
                self.squared += torch.linalg.vector_norm(chunk, dim=0, dtype=torch.float32).double().square()
        else:
            self.squared += x.double().pow(2).sum(dim=0)
        self.tokens += x.shape[0]

    def rms(self) -> torch.Tensor:
        """Each feature's root-mean-square over the calibration tokens."""
        return torch.sqrt(self.squared / max(self.tokens, 1)).float()


class WandaPruner(LayerPruner):
    shares_statistics = True

    def __init__(self, layer: nn.Linear, shared_with: "WandaPruner | None" = None) -> None:
        super().__init__(layer)
        self.feeds_norms = shared_with is None  # shared norms are fed by the group's first linear
        self.norms = shared_with.norms if shared_with else FeatureNorms(self.columns, layer.weight.device)

    def add_batch(self, inputs: torch.Tensor) -> None:
        if self.feeds_norms:
            self.norms.add_batch(inputs)

    def scores(self) -> torch.Tensor:
        """|W| scaled by each input feature's root-mean-square over the calibration tokens."""
        return self.layer.weight.data.abs().float() * self.norms.rms().unsqueeze(0)

    def prune(self, pattern: Pattern) -> PruneResult:
        self._check(pattern)
        scores = self.scores()
        if pattern.is_nm:
            mask = nm_mask(scores, pattern.n, pattern.m)
        else:
            mask = lowest_per_row_mask(scores, pattern.sparsity)
        return apply_mask_and_round(self.layer, mask, pattern)

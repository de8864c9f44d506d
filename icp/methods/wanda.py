"""Wanda (Sun et al., 2023): score |W_ij| * ||X_j||_2, compared within each output row."""

from __future__ import annotations

from collections.abc import Iterable

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
    def __init__(self, layer: nn.Linear, norms: FeatureNorms | None = None) -> None:
        super().__init__(layer)
        self.feeds_norms = norms is None  # shared norms are fed by the group's first linear
        self.norms = norms if norms is not None else FeatureNorms(self.columns, layer.weight.device)

    @classmethod
    def for_layers(cls, layers: dict[str, nn.Linear], shared_inputs: Iterable[Iterable[str]] = (),
                   **options) -> dict[str, "WandaPruner"]:
        """Pruners for a block's linears; those in one `shared_inputs` group share one `FeatureNorms`."""
        pruners: dict[str, WandaPruner] = {}
        for group in shared_inputs:
            names = [name for name in group if name in layers]
            if names:
                first = pruners[names[0]] = cls(layers[names[0]], **options)
                for name in names[1:]:
                    pruners[name] = cls(layers[name], **options, norms=first.norms)
        for name, layer in layers.items():
            pruners.setdefault(name, cls(layer, **options))
        return {name: pruners[name] for name in layers}

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

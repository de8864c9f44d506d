"""Wanda (Sun et al., 2023): score |W_ij| * ||X_j||_2, compared within each output row."""

from __future__ import annotations

import torch
from torch import nn

from .base import LayerPruner, PruneResult, apply_mask_and_round
from .masks import lowest_per_row_mask, nm_mask
from .pattern import Pattern


class WandaPruner(LayerPruner):
    def __init__(self, layer: nn.Linear) -> None:
        super().__init__(layer)
        self.squared_norms = torch.zeros(self.columns, device=layer.weight.device, dtype=torch.float64)
        self.tokens = 0

    def add_batch(self, inputs: torch.Tensor) -> None:
        x = inputs.reshape(-1, self.columns)
        self.squared_norms += x.double().pow(2).sum(dim=0)
        self.tokens += x.shape[0]

    def scores(self) -> torch.Tensor:
        """|W| scaled by each input feature's root-mean-square over the calibration tokens."""
        feature_norm = torch.sqrt(self.squared_norms / max(self.tokens, 1)).float()
        return self.layer.weight.data.abs().float() * feature_norm.unsqueeze(0)

    def prune(self, pattern: Pattern) -> PruneResult:
        self._check(pattern)
        scores = self.scores()
        if pattern.is_nm:
            mask = nm_mask(scores, pattern.n, pattern.m)
        else:
            mask = lowest_per_row_mask(scores, pattern.sparsity)
        self.squared_norms = None
        return apply_mask_and_round(self.layer, mask, pattern)

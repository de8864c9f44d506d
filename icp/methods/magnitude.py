"""Magnitude pruning: remove the weights of smallest |W| in each layer. Needs no data."""

from __future__ import annotations

from .base import LayerPruner, PruneResult, apply_mask_and_round
from .masks import lowest_k_mask, nm_mask, prune_count
from .pattern import Pattern


class MagnitudePruner(LayerPruner):
    needs_inputs = False

    def prune(self, pattern: Pattern) -> PruneResult:
        self._check(pattern)
        scores = self.layer.weight.data.abs().float()
        if pattern.is_nm:
            mask = nm_mask(scores, pattern.n, pattern.m)
        else:
            mask = lowest_k_mask(scores, prune_count(scores.numel(), pattern.sparsity))
        return apply_mask_and_round(self.layer, mask, pattern)

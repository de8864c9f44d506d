"""The interface every layer pruner follows: the engine feeds statistics, the method solves.

A pruner wraps one `nn.Linear`. The engine calls `add_batch` with the layer's inputs for every
calibration batch (only when `needs_inputs`), then `prune` once; `prune` rewrites the weight in place.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from .pattern import Pattern
from .quant import ChannelGrid


@dataclass
class PruneResult:
    """What pruning one layer produced: its prune mask and, when quantized, its grid."""

    mask: torch.Tensor
    grid: ChannelGrid | None = None

    @property
    def sparsity(self) -> float:
        return float(self.mask.float().mean())


class LayerPruner:
    """Base class: subclasses set `needs_inputs` and implement `prune`."""

    needs_inputs: bool = True

    def __init__(self, layer: nn.Linear) -> None:
        self.layer = layer
        self.rows, self.columns = layer.weight.shape

    # True for methods whose input statistics can serve several linears that read one input
    shares_statistics: bool = False

    @classmethod
    def for_layers(cls, layers: dict[str, nn.Linear], shared_inputs: Iterable[Iterable[str]] = (),
                   **options) -> dict[str, "LayerPruner"]:
        """One pruner per linear of a block. `shared_inputs` names groups of linears that read the
        same input (q/k/v, gate/up); for a method that `shares_statistics`, the group's first pruner
        gathers them and the others are built with `shared_with=` that pruner."""
        pruners: dict[str, LayerPruner] = {}
        for group in shared_inputs if cls.shares_statistics else ():
            names = [name for name in group if name in layers]
            if names:
                first = pruners[names[0]] = cls(layers[names[0]], **options)
                for name in names[1:]:
                    pruners[name] = cls(layers[name], **options, shared_with=first)
        for name, layer in layers.items():
            if name not in pruners:
                pruners[name] = cls(layer, **options)
        return {name: pruners[name] for name in layers}

    def add_batch(self, inputs: torch.Tensor) -> None:  # pragma: no cover - overridden when used
        raise NotImplementedError

    def prune(self, pattern: Pattern) -> PruneResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check(self, pattern: Pattern) -> None:
        if pattern.is_nm and self.columns % pattern.m:
            raise ValueError(
                f"N:M pattern {pattern.n}:{pattern.m} needs the input dimension of every pruned "
                f"layer divisible by {pattern.m}; this layer has {self.columns}"
            )


def apply_mask_and_round(layer: nn.Linear, mask: torch.Tensor, pattern: Pattern) -> PruneResult:
    """Zero the masked weights and, if asked, round the rest to the nearest grid point (RTN).

    The grid is fitted on the dense weight, as SparseGPT's joint step does, so all methods share it.
    """
    weight = layer.weight.data
    grid = ChannelGrid.fit(weight, pattern.wbits) if pattern.quantize else None
    pruned = weight.float().masked_fill(mask, 0.0)
    if grid is not None:
        pruned = grid.quantize(pruned)
    layer.weight.data = pruned.to(weight.dtype)
    return PruneResult(mask=mask, grid=grid)

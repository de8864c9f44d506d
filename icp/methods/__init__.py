"""Layer pruning methods, by name. Adding a method = one module with one `LayerPruner` subclass."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from .base import LayerPruner, PruneResult
from .magnitude import MagnitudePruner
from .pattern import Pattern, parse_pattern
from .sparsegpt import SparseGPTPruner
from .wanda import WandaPruner

PRUNERS: dict[str, type[LayerPruner]] = {
    "magnitude": MagnitudePruner,
    "wanda": WandaPruner,
    "sparsegpt": SparseGPTPruner,
}


def _method(name: str) -> type[LayerPruner]:
    if name not in PRUNERS:
        raise ValueError(f"unknown pruning method {name!r}; known: {sorted(PRUNERS)}")
    return PRUNERS[name]


def make_pruner(name: str, layer: nn.Linear, options: dict[str, Any] | None = None) -> LayerPruner:
    """A pruner of method `name` for `layer`; `options` go to its constructor (e.g. SparseGPT's blocksize)."""
    return _method(name)(layer, **(options or {}))


def make_pruners(name: str, layers: dict[str, nn.Linear], options: dict[str, Any] | None = None,
                 shared_inputs: Iterable[Iterable[str]] = ()) -> dict[str, LayerPruner]:
    """Pruners of method `name` for a block's linears; linears of one `shared_inputs` group read the
    same input, so the method may keep one set of statistics for them (SparseGPT's Hessian)."""
    return _method(name).for_layers(layers, shared_inputs, **(options or {}))


__all__ = ["PRUNERS", "LayerPruner", "Pattern", "PruneResult", "make_pruner", "make_pruners", "parse_pattern"]

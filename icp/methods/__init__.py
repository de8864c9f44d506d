"""Layer pruning methods, by name. Adding a method = one module with one `LayerPruner` subclass."""

from __future__ import annotations

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


def make_pruner(name: str, layer: nn.Linear, options: dict[str, Any] | None = None) -> LayerPruner:
    """A pruner of method `name` for `layer`; `options` go to its constructor (e.g. SparseGPT's blocksize)."""
    if name not in PRUNERS:
        raise ValueError(f"unknown pruning method {name!r}; known: {sorted(PRUNERS)}")
    return PRUNERS[name](layer, **(options or {}))


__all__ = ["PRUNERS", "LayerPruner", "Pattern", "PruneResult", "make_pruner", "parse_pattern"]

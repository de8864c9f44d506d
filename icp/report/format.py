"""What the tables, the plots and the ablation section share: labels and Markdown."""

from __future__ import annotations

from typing import Any

from ..registry import method_label, method_order

__all__ = ["label", "markdown", "method_label", "ordered_methods"]


def label(config: dict[str, Any], kind: str, name: str) -> str:
    """The config's `label` of a model, corpus or image set (its name where it has none)."""
    return (config.get(kind, {}).get(name) or {}).get("label", name)


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def ordered_methods(methods: Any) -> list[str]:
    """The pruning methods present (the dense model, drawn apart, left out), in registry order,
    each before its staged variants."""
    return sorted(set(methods) - {"dense"}, key=method_order)

"""The methods and post-pruning stages the pipeline knows, each registered once (no torch).

The config checks, the tables, the plots and the API all read these. A table names what it shows
as `<method>[+<stage>...]`: `sparsegpt` is SparseGPT alone, `sparsegpt+ic` SparseGPT followed by
input compensation. The layer pruners' classes are in `icp.methods.PRUNERS` (a test keeps the two
lists in step).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MethodInfo:
    name: str
    label: str
    layer_pruner: bool  # prunes each linear itself (else it wraps an inner pruner: ICP)
    uses_calibration: bool = True


@dataclass(frozen=True)
class StageInfo:
    name: str
    label: str


METHODS: dict[str, MethodInfo] = {
    "magnitude": MethodInfo("magnitude", "Magnitude", layer_pruner=True, uses_calibration=False),
    "wanda": MethodInfo("wanda", "Wanda", layer_pruner=True),
    "sparsegpt": MethodInfo("sparsegpt", "SparseGPT", layer_pruner=True),
    "icp": MethodInfo("icp", "ICP", layer_pruner=False),
}
LAYER_PRUNERS = tuple(name for name, info in METHODS.items() if info.layer_pruner)

STAGES: dict[str, StageInfo] = {
    "ic": StageInfo("ic", "IC"),  # input compensation (icp.methods.input_compensation; SAM: our adaptation)
}

DENSE_LABEL = "Dense"


def split_method(entry: str) -> tuple[str, tuple[str, ...]]:
    """(method, stages) of a table entry such as 'sparsegpt+ic'; unknown names raise ValueError."""
    method, *stages = entry.split("+")
    if method not in METHODS and method != "dense":
        raise ValueError(f"unknown method {method!r}; known: {sorted(METHODS)}")
    for stage in stages:
        if stage not in STAGES:
            raise ValueError(f"unknown post-pruning stage {stage!r} in {entry!r}; known: {sorted(STAGES)}")
    if method == "dense" and stages:
        raise ValueError(f"{entry!r}: stages follow a pruning method, not the dense model")
    return method, tuple(stages)


def method_label(entry: str) -> str:
    """'SparseGPT + IC' for 'sparsegpt+ic' (unknown names as they are)."""
    if entry == "dense":
        return DENSE_LABEL
    method, *stages = entry.split("+")
    parts = [METHODS[method].label if method in METHODS else method]
    parts += [STAGES[s].label if s in STAGES else s for s in stages]
    return " + ".join(parts)


def method_order(entry: str) -> tuple[int, int]:
    """Sort key: dense first, then the methods in registry order, each before its staged variants."""
    if entry == "dense":
        return (-1, 0)
    method, *stages = entry.split("+")
    names = list(METHODS)
    return (names.index(method) if method in names else len(names), len(stages))

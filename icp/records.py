"""The one schema of `pruning.json`, the record saved beside every pruned model (the workflow's
assembled runs, the API's `save_to`, and, with a `stages` list appended, every staged run)."""

from __future__ import annotations

from typing import Any


def pruning_record(spec: dict[str, Any], blocks: list[dict[str, Any]], *, identity: dict[str, Any] | None = None,
                   versions: dict[str, str] | None = None) -> dict[str, Any]:
    """`blocks`: the engine's step records ({"block", "layers", "seconds", "output_rel_mse", ...},
    with "device" / "peak_gpu_gib" where the job added them)."""
    pruned = sum(layer["sparsity"] * layer["numel"] for block in blocks for layer in block["layers"].values())
    total = sum(layer["numel"] for block in blocks for layer in block["layers"].values())
    return {
        "id": identity,
        "spec": spec,
        "measured_sparsity": pruned / total if total else 0.0,
        "prune_seconds": sum(block.get("seconds", 0.0) for block in blocks),
        "peak_gpu_gib": max((block.get("peak_gpu_gib", 0.0) for block in blocks), default=0.0),
        "device": blocks[0].get("device") if blocks else None,
        "blocks": blocks,
        "versions": versions or {},
    }

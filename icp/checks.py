"""Checks of a saved pruned checkpoint against what its record says was done to it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from .checkpoint import GRIDS_FILE
from .methods.masks import check_nm
from .methods.quant import ChannelGrid
from .models import adapter_for
from .models.loading import CheckpointReader, load_config


def verify_pruned(model_dir: str | Path, spec: dict[str, Any]) -> dict[str, Any]:
    """Every N:M group holds and, for quantized runs, every weight lies on its channel's grid.

    Returns counts of what was checked; raises ValueError naming the first layer that fails.
    """
    model_dir = Path(model_dir)
    config = load_config(model_dir)
    adapter = adapter_for(config.model_type)
    reader = CheckpointReader(model_dir)
    grids = load_file(str(model_dir / GRIDS_FILE)) if (model_dir / GRIDS_FILE).exists() else {}
    nm = None if spec["pattern"] == "unstructured" else tuple(int(x) for x in spec["pattern"].split(":"))
    quantized = spec.get("wbits", 16) < 16
    checked = {"layers": 0, "nm_groups": 0, "on_grid": 0}
    for index in range(adapter.num_blocks(config)):
        prefix = adapter.block_prefix(index)
        for name in adapter.linear_roles:
            key = f"{prefix}{name}"
            weight = reader.read([f"{key}.weight"])[f"{key}.weight"].float()
            checked["layers"] += 1
            if nm and not check_nm(weight, *nm):
                raise ValueError(f"{key}: some group of {nm[1]} weights has more than {nm[0]} non-zeros")
            if nm:
                checked["nm_groups"] += weight.numel() // nm[1]
            if quantized:
                if f"{key}.scale" not in grids:
                    raise ValueError(f"{key}: quantized run, but no grid saved in {GRIDS_FILE}")
                grid = ChannelGrid(grids[f"{key}.scale"], grids[f"{key}.zero"], 2 ** spec["wbits"] - 1)
                if not grid.on_grid(weight, atol=1e-3 * float(grid.scale.min())):
                    raise ValueError(f"{key}: weights off the {spec['wbits']}-bit grid")
                checked["on_grid"] += weight.numel()
    return checked


def verify_and_record(model_dir: str | Path) -> dict[str, Any]:
    """Run `verify_pruned` with the spec in the checkpoint's pruning.json and store the result there."""
    record_path = Path(model_dir) / "pruning.json"
    record = json.loads(record_path.read_text())
    record["checks"] = verify_pruned(model_dir, record["spec"])
    record_path.write_text(json.dumps(record, indent=1))
    return record["checks"]

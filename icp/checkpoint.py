"""Per-block state on disk: group outputs, mid-group progress for resume, and assembly of the
pruned model into a normal Hugging Face checkpoint."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .engine import GRID_PREFIX
from .models.loading import CheckpointReader

GRIDS_FILE = "quant_grids.safetensors"

CONFIG_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja")


def atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class GroupProgress:
    """Mid-group progress beside a group's carry file, so a killed job resumes at its last finished block.

    Each finished block is its own file (written once); `window.pt` holds the window state after
    the newest one. Both are valid only for the same run settings and block range.
    """

    def __init__(self, carry_out: Path, spec: dict[str, Any], blocks: range) -> None:
        self.dir = carry_out.with_name(carry_out.name + ".progress")
        self.key = json.dumps({"spec": spec, "blocks": [blocks.start, blocks.stop]}, sort_keys=True)

    def load(self) -> dict[str, Any] | None:
        """{'next_block', 'carry', 'finished', 'records'} of the newest saved block, or None."""
        window = self.dir / "window.pt"
        if not window.exists():
            return None
        try:
            state = torch.load(window, map_location="cpu", weights_only=True)
            if state.get("key") != self.key:
                return None
            finished, records = {}, []
            for index in range(json.loads(self.key)["blocks"][0], state["next_block"]):
                block = torch.load(self.dir / f"block_{index:04d}.pt", map_location="cpu", weights_only=True)
                finished[index] = block["weights"]
                records.append(json.loads(block["record"]))
        except Exception as err:  # a corrupt progress file costs only the blocks since the group began
            print(f"ignoring unreadable progress in {self.dir}: {err}")
            return None
        return {"next_block": state["next_block"], "carry": state["carry"], "finished": finished, "records": records}

    def keep_block(self, index: int, weights: dict[str, torch.Tensor], record: dict[str, Any]) -> None:
        """Store finished block `index` (written once; valid once a later window state points past it)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_torch_save({"weights": weights, "record": json.dumps(record)}, self.dir / f"block_{index:04d}.pt")

    def save_window(self, index: int, carry: dict[str, Any]) -> None:
        """The window state after block `index`: a resumed job starts at block `index + 1`."""
        atomic_torch_save({"key": self.key, "next_block": index + 1, "carry": carry}, self.dir / "window.pt")

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def save_group_outputs(adapter, finished: dict[int, dict[str, torch.Tensor]], records: list[dict[str, Any]],
                       carry: dict[str, Any], out_weights, out_record, carry_out) -> None:
    """Finished blocks (full checkpoint names), their records, and the window state for the next group."""
    tensors = {}
    for index, state in finished.items():
        prefix = adapter.block_prefix(index)
        for name, t in state.items():
            if name.startswith(GRID_PREFIX):  # a quantized layer's grid: __grid__.<block prefix><layer>.<scale|zero>
                tensors[GRID_PREFIX + prefix + name[len(GRID_PREFIX):]] = t.contiguous()
            else:
                tensors[prefix + name] = t.contiguous()
    for path in (out_weights, out_record, carry_out):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_weights))
    Path(out_record).write_text(json.dumps(records, indent=1))
    atomic_torch_save(carry, Path(carry_out))


def assemble(dense_dir: str | Path, group_weights: list[str | Path], out_dir: str | Path, record: dict[str, Any]) -> None:
    """The dense checkpoint with every block replaced by its pruned version, saved with
    `record` (method, per-layer sparsities, measured sparsity, data, versions) as `pruning.json`."""
    dense_dir, out_dir = Path(dense_dir), Path(out_dir)
    reader = CheckpointReader(dense_dir)
    tensors = reader.read(reader.names())
    replaced = 0
    grids: dict[str, torch.Tensor] = {}
    for file in group_weights:
        for name, t in load_file(str(file)).items():
            if name.startswith(GRID_PREFIX):
                grids[name[len(GRID_PREFIX):]] = t
                continue
            if name not in tensors:
                raise KeyError(f"{file} holds {name!r}, which the dense checkpoint does not have")
            tensors[name] = t
            replaced += 1
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in CONFIG_FILES:
        if (dense_dir / name).exists():
            shutil.copy2(dense_dir / name, out_dir / name)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    if grids:  # per-channel quantization grids: <layer>.scale / <layer>.zero, value = scale * (q - zero)
        save_file({k: v.contiguous() for k, v in grids.items()}, str(out_dir / GRIDS_FILE))
    (out_dir / "pruning.json").write_text(json.dumps({**record, "replaced_tensors": replaced,
                                                      "quant_grids": GRIDS_FILE if grids else None}, indent=1))

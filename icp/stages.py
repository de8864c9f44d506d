"""Post-pruning stages as workflow jobs: each reads a finished run's model and writes a new run
directory (a standard checkpoint plus the record of everything that made it).

Input compensation is the one stage today: see `icp.methods.input_compensation`.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import save_file

from .checkpoint import load_cached
from .methods.input_compensation import POOL_FILE, fold_into_embeddings, train_input_compensation
from .models import adapter_for
from .models.loading import load_model, saved_model_type
from .spec import stage_settings

RECORD = "pruning.json"
REPLACED = ("model.safetensors", "model.safetensors.index.json", "config.json", RECORD)


def save_model_dir(model: torch.nn.Module, source_dir: str | Path, out_dir: str | Path) -> None:
    """`model` as `out_dir`: its weights and config, beside every other file of `source_dir`
    (tokenizer, quantization grids)."""
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for item in source_dir.iterdir():
        if item.is_file() and item.name not in REPLACED:
            shutil.copy2(item, out_dir / item.name)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out_dir / "model.safetensors"),
              metadata={"format": "pt"})
    model.config.save_pretrained(out_dir)


def run_input_compensation(in_dir: str | Path, dense_outputs: str | Path, stage: dict[str, Any],
                           identity: dict[str, Any], out_dir: str | Path, progress: str | Path,
                           device: str = "cpu", dtype: str = "float32",
                           log: Callable[[str], None] = print) -> dict[str, Any]:
    """The IC stage of a run: train the pool on the cached dense targets, fold it into the
    embeddings (untied from the head where they were tied) and save the compensated model. Where
    the pool cannot fold (SAM), the run's weights are kept as they are and the pool is saved beside
    them (POOL_FILE), which `load_sam` attaches."""
    started = time.perf_counter()
    settings = stage_settings("ic", stage["settings"])
    model, _ = load_model(str(in_dir), dtype)
    adapter = adapter_for(saved_model_type(in_dir))
    data = load_cached(dense_outputs, "dense_outputs")
    tokens, targets = data["tokens"], data["last_hidden"]
    log(f"input compensation of {stage['input_run']}: calibration inputs {tuple(tokens.shape)}, "
        f"rank {settings.rank}, {settings.epochs} epochs on {device}")
    Path(progress).parent.mkdir(parents=True, exist_ok=True)
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    pool, record = train_input_compensation(model, adapter, tokens, targets, settings, device, progress, log)
    model.cpu()
    if adapter.folds_input_pool:
        fold_into_embeddings(model, adapter, pool)
        save_model_dir(model, in_dir, out_dir)
    else:
        shutil.copytree(in_dir, out_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns(RECORD))
    record["folded"] = adapter.folds_input_pool
    pool.save(Path(out_dir) / POOL_FILE)
    base = json.loads((Path(in_dir) / RECORD).read_text())
    entry = {"name": "ic", "settings": asdict(settings), "calibration": stage["calibration"],
             "input_run": stage["input_run"], "seconds": time.perf_counter() - started, **record}
    base["stages"] = [*base.get("stages", []), entry]
    base["id"] = identity
    (Path(out_dir) / RECORD).write_text(json.dumps(base, indent=1))
    Path(progress).unlink(missing_ok=True)
    log(f"input compensation done: loss {record['epoch_loss'][0] if record['epoch_loss'] else float('nan'):.6g} "
        f"-> {record['epoch_loss'][-1] if record['epoch_loss'] else float('nan'):.6g}")
    return entry

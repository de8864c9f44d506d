"""Per-block state on disk: each finished block written once (it is both the resume point and the
group's output), and assembly of the pruned model into a normal Hugging Face checkpoint."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .engine import GRID_PREFIX
from .models.loading import CheckpointReader, DamagedFile

GRIDS_FILE = "quant_grids.safetensors"

CONFIG_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja")


def load_cached(path: str | Path, made_by: str, **load_args: Any) -> Any:
    """`torch.load` of a file a job of this pipeline wrote. A damaged file is removed, so the next
    run rebuilds it (Snakemake sees it missing), and the error names it and the rule that makes it."""
    try:
        return torch.load(path, weights_only=True, **load_args)
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - torch raises several kinds for a broken archive
        Path(path).unlink(missing_ok=True)
        raise DamagedFile(f"{path} is damaged ({type(err).__name__}: {err}); it has been removed: run the "
                          f"workflow again and rule {made_by} rebuilds it") from None


def atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class BlockFiles:
    """A block group's finished blocks on disk: one safetensors file (full checkpoint names, grids
    included) and one JSON record per block, written by a background thread while the next block
    computes, each written once.

    They collect in `<out_dir>.partial/` and the directory is renamed to `out_dir` when the group
    is done, so a killed job leaves its finished blocks where the next attempt finds them (valid
    only for the same run settings and block range, which `key.json` records).
    """

    def __init__(self, out_dir: str | Path, spec: dict[str, Any], blocks: range, prefix: Callable[[int], str]) -> None:
        self.out_dir = Path(out_dir)
        self.dir = self.out_dir.with_name(self.out_dir.name + ".partial")
        self.key = {"spec": spec, "blocks": [blocks.start, blocks.stop]}
        self.blocks = blocks
        self.prefix = prefix
        self._writer = ThreadPoolExecutor(max_workers=1)
        self._pending: list[Future] = []

    def finished(self, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
        """Records of the blocks already finished, from the group's first block on without gaps
        (empty for a fresh start). Finished blocks of other settings are moved aside, never deleted;
        a block whose file does not read back is done again, with every block after it."""
        key_file = self.dir / "key.json"
        if key_file.exists():
            try:
                same = json.loads(key_file.read_text()) == json.loads(json.dumps(self.key))
            except json.JSONDecodeError:
                same = False
            if not same:
                aside = self._aside()
                os.replace(self.dir, aside)
                log(f"{self.dir} holds blocks of other run settings: moved to {aside}")
        self.dir.mkdir(parents=True, exist_ok=True)
        key_file.write_text(json.dumps(self.key, sort_keys=True))
        records = []
        for index in self.blocks:
            record = self.dir / f"block_{index:04d}.json"
            if not record.exists():
                break
            try:
                records.append(json.loads(record.read_text()))
                with safe_open(str(self.dir / f"block_{index:04d}.safetensors"), "pt"):
                    pass  # the header must cover the whole file: a truncated or torn block is not trusted
            except Exception as err:  # noqa: BLE001 - a torn record, a truncated or overwritten block file
                log(f"finished block {index} in {self.dir} does not read back ({type(err).__name__}); "
                    f"it and the blocks after it are done again")
                records = records[: index - self.blocks.start]
                for later in range(index, self.blocks.stop):
                    for suffix in (".json", ".safetensors"):
                        (self.dir / f"block_{later:04d}{suffix}").unlink(missing_ok=True)
                break
        return records

    def _aside(self) -> Path:
        n = 1
        while (candidate := self.dir.with_name(f"{self.dir.name}.old-{n}")).exists():
            n += 1
        return candidate

    def load(self, index: int) -> dict[str, torch.Tensor]:
        """Finished block `index`'s tensors, names relative to the block (grids under GRID_PREFIX)."""
        prefix = self.prefix(index)
        state = {}
        for name, value in load_file(str(self.dir / f"block_{index:04d}.safetensors")).items():
            if name.startswith(GRID_PREFIX):
                state[GRID_PREFIX + name[len(GRID_PREFIX) + len(prefix):]] = value
            else:
                state[name[len(prefix):]] = value
        return state

    def put(self, index: int, state: dict[str, torch.Tensor], record: dict[str, Any]) -> None:
        """Write finished block `index` in the background (its record last: the record marks it done)."""
        self._raise_failed()
        self._pending.append(self._writer.submit(self._write, index, state, record))

    def _write(self, index: int, state: dict[str, torch.Tensor], record: dict[str, Any]) -> None:
        prefix = self.prefix(index)
        tensors = {}
        for name, value in state.items():  # grids: __grid__.<block prefix><layer>.<scale|zero>
            full = GRID_PREFIX + prefix + name[len(GRID_PREFIX):] if name.startswith(GRID_PREFIX) else prefix + name
            tensors[full] = value.contiguous()
        weights = self.dir / f"block_{index:04d}.safetensors"
        tmp = weights.with_name(weights.name + ".tmp")
        save_file(tensors, str(tmp))
        os.replace(tmp, weights)
        record_file = self.dir / f"block_{index:04d}.json"
        tmp = record_file.with_name(record_file.name + ".tmp")
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, record_file)

    def _raise_failed(self) -> None:
        done = [f for f in self._pending if f.done()]
        for future in done:
            future.result()  # re-raises a failed write here, in the job's thread
            self._pending.remove(future)

    def wait(self) -> None:
        for future in self._pending:
            future.result()
        self._pending.clear()

    def flush(self) -> None:
        """Let the writes in flight finish (a job that is failing still keeps the blocks it finished)."""
        for future in self._pending:
            future.exception()  # waits; a failed write is simply not there for the next attempt
        self._pending.clear()
        self._writer.shutdown()

    def commit(self) -> list[dict[str, Any]]:
        """Wait for the writes, then move the blocks to `out_dir`; returns every block's record."""
        self.wait()
        self._writer.shutdown()
        records = [json.loads((self.dir / f"block_{i:04d}.json").read_text()) for i in self.blocks]
        (self.dir / "key.json").unlink()
        if self.out_dir.exists():
            shutil.rmtree(self.out_dir)
        os.replace(self.dir, self.out_dir)
        return records


def group_files(group_dirs: list[str | Path]) -> list[Path]:
    """The block files of finished groups (directories of `block_*.safetensors`; a plain file passes)."""
    files: list[Path] = []
    for entry in map(Path, group_dirs):
        files += sorted(entry.glob("block_*.safetensors")) if entry.is_dir() else [entry]
    return files


def assemble(dense_dir: str | Path, group_weights: list[str | Path], out_dir: str | Path, record: dict[str, Any]) -> None:
    """`group_weights`: the finished groups' block directories. The dense checkpoint with every block replaced by its pruned version, saved with
    `record` (method, per-layer sparsities, measured sparsity, data, versions) as `pruning.json`."""
    dense_dir, out_dir = Path(dense_dir), Path(out_dir)
    reader = CheckpointReader(dense_dir)
    tensors = reader.read(reader.names())
    replaced = 0
    grids: dict[str, torch.Tensor] = {}
    for file in group_files(group_weights):
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

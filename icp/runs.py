"""A pruning run as the config describes it, and how its blocks are walked in resumable groups."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .checkpoint import GroupProgress, save_group_outputs
from .engine import BlockRunner, PrunePlan, Streams, run_step
from .methods import PRUNERS
from .methods.icp import Compensation
from .methods.pattern import Pattern, parse_pattern
from .models import adapter_for
from .models.loading import CheckpointReader, load_config
from .schedule import rearranged_map, uniform_map

METHODS = (*PRUNERS, "icp")


@dataclass(frozen=True)
class RunSpec:
    """One pruned model: method, pattern, sparsity, bits, and the method's own settings."""

    method: str
    pattern: str = "unstructured"
    sparsity: float = 0.5
    wbits: int = 16
    inner: str = "sparsegpt"  # ICP's inner pruner
    alpha: float = 1.0  # ICP inter-block rearrangement
    beta: float = 1.0  # ICP intra-block rearrangement
    compensation: dict[str, Any] = field(default_factory=dict)
    method_options: dict[str, Any] = field(default_factory=dict)  # e.g. SparseGPT blocksize, percdamp
    track_error: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; known: {list(METHODS)}")
        if self.method == "icp" and self.inner not in PRUNERS:
            raise ValueError(f"unknown ICP inner pruner {self.inner!r}; known: {sorted(PRUNERS)}")
        self.as_pattern()  # validates pattern, sparsity and wbits

    def as_pattern(self) -> Pattern:
        return parse_pattern(self.pattern, self.sparsity, self.wbits)

    @property
    def pruner(self) -> str:
        return self.inner if self.method == "icp" else self.method

    def plan(self, runner: BlockRunner) -> PrunePlan:
        shapes = runner.layer_shapes()
        pattern = self.as_pattern()
        if self.method == "icp":
            smap = rearranged_map(shapes, pattern, self.alpha, self.beta)
            compensation = Compensation(**self.compensation)
        else:
            smap = uniform_map(shapes, pattern)
            compensation = None
        return PrunePlan(
            method=self.pruner,
            sparsity=smap,
            method_options=dict(self.method_options),
            compensation=compensation,
            track_error=self.track_error,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunSpec":
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def short_hash(data: Any, length: int = 8) -> str:
    """Stable hash of JSON-able data (keys sorted), used in output paths."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:length]


def block_groups(num_blocks: int, blocks_per_step: int) -> list[range]:
    """Consecutive block ranges, one per workflow step."""
    size = max(1, blocks_per_step)
    return [range(start, min(start + size, num_blocks)) for start in range(0, num_blocks, size)]


def prune_group(
    dense_dir: str | Path,
    spec: RunSpec,
    blocks: range,
    carry_in: str | Path,
    out_weights: str | Path,
    out_record: str | Path,
    carry_out: str | Path,
    device: str = "cpu",
    batch_size: int = 8,
    offload_streams: bool = False,
    progress_seconds: float = 0.0,
    log=print,
) -> None:
    """Prune blocks `blocks` of a run, starting from the window state in `carry_in`.

    `carry_in` is the dense block-0 input cache (first group) or the previous group's carry.
    Progress is saved beside `carry_out` after a block once `progress_seconds` have passed since
    the last save (0: after every block), so a killed job resumes at its last saved block with
    bit-identical results, losing at most that much work. With `offload_streams` the hidden-state
    streams stay in host memory and only one batch at a time visits the accelerator.
    """
    config = load_config(dense_dir)
    adapter = adapter_for(config.model_type)
    carry = torch.load(carry_in, map_location="cpu", weights_only=True)
    dtype = carry["error"].dtype
    runner = BlockRunner(adapter, config, CheckpointReader(dense_dir), device, dtype, carry["error"].shape[1], batch_size)
    blocks = range(blocks.start, min(blocks.stop, runner.num_blocks))
    if not blocks:
        raise ValueError(f"block group starts at {blocks.start}, past the model's {runner.num_blocks} blocks")
    plan = spec.plan(runner)
    needs_dense = plan.track_error or plan.compensation is not None
    if "dense" not in carry:  # the first group starts from the cached dense block-0 inputs
        carry = {"error": carry["error"], "dense": carry["error"] if needs_dense else None, "dense_ahead": False, "pending": None}

    progress = GroupProgress(Path(carry_out), spec.to_dict(), blocks)
    state = progress.load()
    if state is not None:
        log(f"resuming at block {state['next_block']} from {progress.dir}")
        carry, finished, records = state["carry"], state["finished"], state["records"]
        start = state["next_block"]
    else:
        finished, records, start = {}, [], blocks.start

    streams = Streams(carry["error"], carry["dense"], carry["dense_ahead"]).to("cpu" if offload_streams else device)
    if offload_streams and torch.device(device).type == "cuda":
        streams = streams.pinned()  # page-locked host memory: faster, asynchronous copies
    pending = carry["pending"]
    last_save = time.perf_counter()
    for index in range(start, blocks.stop):
        result = run_step(runner, index, streams, pending, plan)
        streams, pending = result.streams, result.pending
        finished[index] = result.block
        records.append(result.record)
        msg = f"block {index + 1}/{runner.num_blocks} done in {result.record['seconds']:.1f}s"
        if "output_rel_mse" in result.record:
            msg += f", relative output error {result.record['output_rel_mse']:.4g}"
        log(msg)
        carry = _carry_dict(streams, pending)
        if index + 1 < blocks.stop:
            progress.keep_block(index, result.block, result.record)
            if time.perf_counter() - last_save >= progress_seconds:
                progress.save_window(index, carry)
                last_save = time.perf_counter()

    save_group_outputs(adapter, finished, records, carry, out_weights, out_record, carry_out)
    progress.clear()


def _carry_dict(streams: Streams, pending) -> dict[str, Any]:
    return {
        "error": streams.error.cpu(),
        "dense": None if streams.dense is None else streams.dense.cpu(),
        "dense_ahead": streams.dense_ahead,
        "pending": pending,
    }

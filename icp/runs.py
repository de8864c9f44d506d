"""A pruning run as the config describes it, and how its blocks are walked in resumable groups."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from .checkpoint import BlockFiles, atomic_torch_save, load_cached
from .engine import BlockRunner, PrunePlan, Streams, cpu_state, place_stream, replay_step, run_step
from .models import adapter_for
from .models.loading import CheckpointReader, load_config
from .schedule import rearranged_map, uniform_map
from .spec import Compensation, RunSpec


def make_plan(spec: RunSpec, runner: BlockRunner) -> PrunePlan:
    """The engine's plan for a run: each layer's pattern (uniform, or ICP's alpha/beta map) and,
    for ICP, the compensation settings."""
    shapes = runner.layer_shapes()
    pattern = spec.as_pattern()
    if spec.compensates:
        smap = rearranged_map(shapes, pattern, spec.alpha, spec.beta)
        compensation = Compensation(**spec.compensation)
    else:
        smap = uniform_map(shapes, pattern)
        compensation = None
    return PrunePlan(method=spec.pruner, sparsity=smap, method_options=dict(spec.method_options),
                     compensation=compensation, track_error=spec.track_error)


def prune_group(
    dense_dir: str | Path,
    spec: RunSpec,
    blocks: range,
    carry_in: str | Path,
    out_blocks: str | Path,
    out_record: str | Path,
    carry_out: str | Path,
    device: str = "cpu",
    batch_size: int = 8,
    offload_streams: bool = False,
    log=print,
) -> None:
    """Prune blocks `blocks` of a run, starting from the window state in `carry_in`.

    `carry_in` is the dense block-0 input cache (first group) or the previous group's carry.
    Each finished block is written once, in the background, into `out_blocks` (a directory; see
    `BlockFiles`): a killed job's next attempt reads the finished blocks back and rebuilds the
    streams by running them again (forwards only, plus one ICP compensation), so it resumes at its
    last finished block with bit-identical results on the CPU, and no stream is ever saved for it.
    `carry_out` gets the window state for the next group; after the model's last block nothing
    needs it and it holds no tensors. With `offload_streams` the hidden-state streams stay in host
    memory and only one batch at a time visits the accelerator.
    """
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=1) as reader:  # the streams are read while the model code imports
        reading = reader.submit(read_window_state, carry_in, device, offload_streams)
        config = load_config(dense_dir)
        adapter = adapter_for(config.model_type)
        carry = reading.result()
    stream_bytes = sum(carry[k].nbytes for k in ("error", "dense") if carry.get(k) is not None)
    log(f"{stream_bytes / 2**30:.2f} GiB of streams read and {config.model_type} code imported "
        f"in {time.perf_counter() - started:.1f}s")
    dtype = carry["error"].dtype
    runner = BlockRunner(adapter, config, CheckpointReader(dense_dir), device, dtype, carry["error"].shape[1], batch_size)
    blocks = range(blocks.start, min(blocks.stop, runner.num_blocks))
    if not blocks:
        raise ValueError(f"block group starts at {blocks.start}, past the model's {runner.num_blocks} blocks")
    plan = make_plan(spec, runner)
    if "dense" in carry:
        streams, pending = Streams(carry["error"], carry["dense"], carry["dense_ahead"]), carry["pending"]
    else:  # the first group starts from the cached dense block-0 inputs
        streams, pending = Streams.from_block0(carry["error"], plan), None
    del carry

    files = BlockFiles(out_blocks, spec.resume_key(), blocks, adapter.block_prefix)
    done = files.finished(log)
    if done:
        log(f"resuming at block {blocks.start + len(done)}: replaying {len(done)} finished block(s) from {files.dir}")
    for index in range(blocks.start, blocks.start + len(done)):
        last = index + 1 == blocks.start + len(done)
        streams, pending = replay_step(runner, index, files.load(index), streams, plan, compensate_next=last,
                                       consume=True)

    try:
        for index in range(blocks.start + len(done), blocks.stop):
            result = run_step(runner, index, streams, pending, plan, consume=True)
            streams, pending = result.streams, result.pending
            files.put(index, result.block, result.record)
            msg = f"block {index + 1}/{runner.num_blocks} done in {result.record['seconds']:.1f}s"
            if "output_rel_mse" in result.record:
                msg += f", relative output error {result.record['output_rel_mse']:.4g}"
            log(msg)
    except BaseException:  # an error or an interrupt: the finished blocks still reach the disk
        files.flush()
        raise

    started = time.perf_counter()
    records = files.commit()
    log(f"finished blocks on disk {time.perf_counter() - started:.1f}s after the last one")
    _add_where_it_ran(records, device, log)
    Path(out_record).parent.mkdir(parents=True, exist_ok=True)
    Path(out_record).write_text(json.dumps(records, indent=1))
    final = blocks.stop >= runner.num_blocks
    started = time.perf_counter()
    atomic_torch_save({"final": True} if final else _carry_dict(streams, pending), Path(carry_out))
    if not final:
        log(f"window state for block {blocks.stop} written in {time.perf_counter() - started:.1f}s "
            f"({Path(carry_out).stat().st_size / 2**30:.2f} GiB)")


# the key of the dense block-0 inputs in their cache file (files written before it was named for
# what it holds keep the stream's name, "error", and read the same)
BLOCK0_KEY = "block0_inputs"


def _add_where_it_ran(records: list[dict[str, Any]], device: str, log) -> None:
    """Each block record gets the device it ran on and, on CUDA, the step's peak memory (the cost
    table's columns): written here once, so no later job rewrites the record."""
    from .provenance import machine

    where = machine(device)
    label = where.get("gpu", f"CPU ({where['cpu_threads']} threads)")
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.device(device).type == "cuda" else None
    if peak is not None:
        log(f"peak accelerator memory {peak:.2f} GiB")
    for record in records:
        record["device"] = label
        if peak is not None:
            record["peak_gpu_gib"] = peak


def read_window_state(path: str | Path, device: str, offload_streams: bool) -> dict[str, Any]:
    """A carry file with its streams already placed for the engine (see `place_stream`). Toward
    CUDA the file is memory-mapped, so each stream is copied once, from the page cache straight
    into pinned or device memory, instead of through a pageable copy first."""
    made_by = "prune_step" if Path(path).name.endswith(".carry.pt") else "block0_activations"
    carry = load_cached(path, made_by, map_location="cpu", mmap=torch.device(device).type == "cuda")
    if BLOCK0_KEY in carry:  # the dense block-0 inputs: both streams start from them
        carry = {"error": carry.pop(BLOCK0_KEY)}
    if "error" not in carry:
        raise ValueError(f"{path} holds no window state (it is the carry of a model's last block group)")
    for key in ("error", "dense"):
        if carry.get(key) is not None:
            carry[key] = place_stream(carry[key], device, offload_streams)
    return carry


def _carry_dict(streams: Streams, pending) -> dict[str, Any]:
    return {
        "error": streams.error.cpu(),
        "dense": None if streams.dense is None else streams.dense.cpu(),
        "dense_ahead": streams.dense_ahead,
        "pending": cpu_state(pending) if isinstance(pending, torch.nn.Module) else pending,
    }

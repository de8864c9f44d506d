"""Where one block's time goes on the GPU: the profiler over a few pruning steps of a 7B-shaped model.

    python benchmarks/profile_block.py --models opt-6.7b --methods sparsegpt icp --blocks 2

The same setup as `prune_benchmark.py` (its `prepare`: random blocks drawn on the GPU, 128 x 2048
calibration tokens, block 0 once untimed), then `--blocks` steps under `torch.profiler`. Reported per method:
wall time per block; the GPU's busy time (the union of its kernel and copy intervals, so
overlapping streams are not counted twice) and what is left, the host gaps; kernel time by kind
(GEMM, attention, factorisation and triangular solves, the Triton sweep, copies, the rest); the
20 costliest kernels; and, from one more step under `torch.cuda.set_sync_debug_mode("warn")`,
every host-device synchronisation by the line of ours that asked for it (host gaps start there);
and, from one more step with the device synchronised at every phase boundary, the time of each phase
(statistics pass, factorisation, sweeps, forwards, compensation, ...), each counted exclusive of the
phases it calls. Writes profile_block_<gpu>.json (and the profiler's own table as .txt).
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from icp.engine import run_step
from prune_benchmark import SWEEP_PATHS, prepare

KINDS = (  # first match wins; names as cuBLAS / cuSOLVER / PyTorch / Triton give them
    ("copy", ("memcpy", "memset")),
    ("attention", ("flash", "fmha", "attention", "sdpa", "efficient_attention")),
    ("factorisation", ("potrf", "trsm", "trsv", "syrk", "cusolver", "getrf", "cholesky", "potri", "trtri")),
    ("gemm", ("gemm", "cutlass", "nvjet", "xmma", "sm90_", "sm80_", "ampere_", "hopper")),
    ("triton", ("triton",)),
)


def kind_of(name: str) -> str:
    low = name.lower()
    for kind, needles in KINDS:
        if any(n in low for n in needles):
            return kind
    return "other"


def busy_seconds(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end) intervals (microseconds in, seconds out)."""
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if start > end:
            total += stop - start
            end = stop
        elif stop > end:
            total += stop - end
            end = stop
    return total / 1e6


def sync_points(step) -> dict[str, int]:
    """Host-device synchronisations during `step()`, counted by the innermost frame in `icp/`
    (or in this benchmark) that led to them."""
    counts: Counter[str] = Counter()
    previous = warnings.showwarning

    def record(message, category, filename, lineno, file=None, line=None):
        if "synchroniz" not in str(message):
            return previous(message, category, filename, lineno, file, line)
        ours = [f for f in traceback.extract_stack()[:-1] if "/icp/" in f.filename or "benchmarks/" in f.filename]
        where = ours[-1] if ours else None
        counts[f"{Path(where.filename).name}:{where.lineno} {where.name}" if where else f"{filename}:{lineno}"] += 1

    with warnings.catch_warnings():  # restores showwarning and the filters on the way out
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
            torch.cuda.synchronize()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return dict(counts.most_common())


PHASES = (  # (module, class or None, attribute, phase): timed exclusive of the phases inside them
    ("icp.engine", None, "prune_block", "pruning"),
    ("icp.engine", None, "advance", "streams onward"),
    ("icp.engine", None, "statistics_pass", "statistics pass"),
    ("icp.engine", "BlockRunner", "forward", "block forward"),
    ("icp.engine", "BlockRunner", "load", "block load"),
    ("icp.engine", None, "compensate", "compensation (training)"),
    ("icp.engine", None, "_finished_state", "copy out the finished block"),
    ("icp.methods.sparsegpt", "InputHessian", "inverse_factor", "H^-1 factorisation"),
    ("icp.methods.sparsegpt", None, "sweep_blocks", "sweeps and updates"),
    ("icp.methods.sparsegpt", "InputHessian", "add_batch", "Hessian GEMMs"),
    ("icp.methods.wanda", "FeatureNorms", "add_batch", "Wanda norms"),
)


def phase_seconds(step) -> dict[str, float]:
    """Seconds of `step()` per engine phase, the device synchronised at every boundary (so no
    overlap across phases: a diagnostic of where the work is, not of the pipelined wall time).
    A phase inside another is named by its path ("pruning / statistics pass / block forward"); each
    counts its own time only."""
    import importlib

    totals: Counter[str] = Counter()
    stack: list[list] = []  # [path, started]

    def wrap(original, phase):
        def timed(*args, **kwargs):
            torch.cuda.synchronize()
            now = time.perf_counter()
            if stack:
                totals[stack[-1][0]] += now - stack[-1][1]
            stack.append([f"{stack[-1][0]} / {phase}" if stack else phase, now])
            try:
                return original(*args, **kwargs)
            finally:
                torch.cuda.synchronize()
                now = time.perf_counter()
                path, since = stack.pop()
                totals[path] += now - since
                if stack:
                    stack[-1][1] = now
        return timed

    patched = []
    for module, owner, attribute, phase in PHASES:
        target = importlib.import_module(module)
        if owner:
            target = getattr(target, owner)
        original = getattr(target, attribute)
        patched.append((target, attribute, original))
        setattr(target, attribute, wrap(original, phase))
    try:
        torch.cuda.synchronize()
        started = time.perf_counter()
        step()
        torch.cuda.synchronize()
        wall = time.perf_counter() - started
    finally:
        for target, attribute, original in patched:
            setattr(target, attribute, original)
    totals["rest (host work between phases)"] = wall - sum(totals.values())
    return {"wall": wall, **dict(totals.most_common())}


def profile_method(name: str, method: str, blocks: int, nsamples: int, seqlen: int, out: Path, slug: str,
                   path: str = "auto") -> dict:
    runner, plan, streams, blocks = prepare(name, method, nsamples, seqlen, torch.float16, blocks, kernel=path,
                                            extra_steps=1)  # one_more, below
    pending = None
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        started = time.perf_counter()
        for index in range(blocks):
            result = run_step(runner, index, streams, pending, plan, consume=True)
            streams, pending = result.streams, result.pending
        torch.cuda.synchronize()
        wall = time.perf_counter() - started

    def one_more() -> None:  # the block after the profiled ones (prepare drew what it touches)
        run_step(runner, min(blocks, runner.num_blocks - 1), streams, pending, plan)

    try:
        syncs = sync_points(one_more)
    except Exception as error:  # the census is a diagnostic: it never costs the profile
        syncs = {"census failed": 1, repr(error)[:200]: 1}
    try:
        phases = phase_seconds(one_more)
    except Exception as error:
        phases = {"phases failed": repr(error)[:200]}
    events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    by_kind: dict[str, float] = {}
    by_kernel: dict[str, list[float]] = {}
    intervals = []
    for e in events:
        start, length = e.time_range.start, e.time_range.elapsed_us()
        intervals.append((start, start + length))
        by_kind[kind_of(e.name)] = by_kind.get(kind_of(e.name), 0.0) + length / 1e6
        entry = by_kernel.setdefault(e.name, [0.0, 0])
        entry[0] += length / 1e6
        entry[1] += 1
    busy = busy_seconds(intervals)
    top = sorted(by_kernel.items(), key=lambda kv: -kv[1][0])[:20]
    suffix = "" if path == "auto" else f"_{path}"
    (out / f"profile_block_{slug}_{name}_{method}{suffix}.txt").write_text(
        prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=60))
    return {
        "model": name, "method": method, "path": path, "blocks_profiled": blocks, "nsamples": nsamples, "seqlen": seqlen,
        "wall_per_block_s": wall / blocks, "gpu_busy_per_block_s": busy / blocks,
        "host_gap_per_block_s": (wall - busy) / blocks,
        "kernel_seconds_per_block_by_kind": {k: v / blocks for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
        "top_kernels": [{"name": n[:160], "kind": kind_of(n), "seconds_per_block": s / blocks, "calls_per_block": c / blocks}
                        for n, (s, c) in top],
        "syncs_in_one_step": syncs,
        "seconds_by_phase_in_one_synchronised_step": phases,
        "note": "profiler overhead included in the wall time; kernel times by kind may overlap across streams",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["opt-6.7b"])
    parser.add_argument("--methods", nargs="+", default=["sparsegpt", "wanda", "icp"])
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--paths", nargs="+", default=["auto"], choices=sorted(SWEEP_PATHS),
                        help="SparseGPT / ICP paths of prune_benchmark.SWEEP_PATHS (auto: the default)")
    parser.add_argument("--nsamples", type=int, default=128)
    parser.add_argument("--seqlen", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    gpu = torch.cuda.get_device_name(0)
    slug = gpu.lower().replace("nvidia", "").split()[0]
    args.out.mkdir(parents=True, exist_ok=True)
    report = args.out / f"profile_block_{slug}.json"
    rows = []
    for name in args.models:
        cases = [(m, p) for m in args.methods for p in (args.paths if m in ("sparsegpt", "icp") else ["auto"])]
        for method, sweep_path in cases:
            row = profile_method(name, method, args.blocks, args.nsamples, args.seqlen, args.out, slug, sweep_path)
            rows.append(row)
            kinds = ", ".join(f"{k} {v:.2f}" for k, v in row["kernel_seconds_per_block_by_kind"].items())
            print(f"{name} {method} ({sweep_path}): {row['wall_per_block_s']:.2f} s/block, GPU busy {row['gpu_busy_per_block_s']:.2f}, "
                  f"gaps {row['host_gap_per_block_s']:.2f}; {kinds}", flush=True)
            print("  syncs in one step:", row["syncs_in_one_step"], flush=True)
            print("  phases (synchronised step):", {k: round(v, 3) if isinstance(v, float) else v
                                                   for k, v in row["seconds_by_phase_in_one_synchronised_step"].items()}, flush=True)
            report.write_text(json.dumps({"gpu": gpu, "torch": torch.__version__, "rows": rows}, indent=1))
            torch.cuda.empty_cache()
    print(f"wrote {report}")


if __name__ == "__main__":
    main()

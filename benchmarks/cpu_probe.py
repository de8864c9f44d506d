"""How fast this CPU is today, at the default's own shapes: to tell a slower machine from slower code.

    python benchmarks/cpu_probe.py                       # prints one line
    python benchmarks/cpu_probe.py --append benchmarks/results/cpu_probe.txt

The embedded default's jobs are mostly fp32 GEMMs of SmolLM2-135M (hidden 576, MLP 1536) over a few
thousand tokens: a zero-shot job spends 23 s of its 40 s in `linear`. Timing the default
on two days compares the machines as much as the code; this probe, run just before and after such a
timing, says how much of a difference is the machine's. Reported: GFLOP/s of `torch.nn.functional.linear`
at the MLP's two shapes and of a causal `scaled_dot_product_attention`, median of `--repeats` timed
rounds after one untimed round, with the threads the workflow's jobs use (`cpu_threads: auto`, all cores).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time
from pathlib import Path

import torch


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def rate(fn, flops: float, repeats: int) -> float:
    """Median GFLOP/s of `fn` over `repeats` timed rounds (one untimed round first)."""
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return flops / statistics.median(times) / 1e9


def probe(tokens: int = 4096, hidden: int = 576, mlp: int = 1536, heads: int = 9, seqlen: int = 512,
          repeats: int = 9) -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(tokens, hidden, generator=gen)
    up = torch.randn(mlp, hidden, generator=gen)
    h = torch.randn(tokens, mlp, generator=gen)
    down = torch.randn(hidden, mlp, generator=gen)
    q = torch.randn(tokens // seqlen, heads, seqlen, hidden // heads, generator=gen)
    linear = torch.nn.functional.linear
    with torch.inference_mode():
        return {
            "linear_up_gflops": rate(lambda: linear(x, up), 2 * tokens * hidden * mlp, repeats),
            "linear_down_gflops": rate(lambda: linear(h, down), 2 * tokens * hidden * mlp, repeats),
            # causal: about half of QK^T and of PV are computed
            "sdpa_causal_gflops": rate(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True),
                                       2 * tokens * seqlen * hidden, repeats),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, all cores)")
    parser.add_argument("--append", type=Path, default=None, help="also append the line to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    numbers = probe(repeats=args.repeats)
    line = (f"{datetime.datetime.now().isoformat(timespec='seconds')}  {cpu_name()}, {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}: " + ", ".join(f"{k} {v:.1f}" for k, v in numbers.items()))
    print(line)
    if args.append:
        args.append.parent.mkdir(parents=True, exist_ok=True)
        with args.append.open("a") as out:
            out.write(line + "\n")


if __name__ == "__main__":
    main()

"""What SparseGPT's H^-1 factor costs on the GPU, step by step, against the fp32 arithmetic rate.

The default (the reference order) is three fp32 steps: Cholesky of H, `cholesky_inverse` (on CUDA
PyTorch solves against the identity: two triangular solves with n right-hand sides) and Cholesky of
H^-1. The opt-in `flip_factor` is one Cholesky and one triangular solve. Each step is timed alone
(median of `--repeats`, the device synchronised around it) on a dampened X^T X of the layer widths
of OPT-6.7B and Llama-2-7B, with its nominal flop count; an fp32 and an fp16 GEMM of the same n give
the rates the steps are measured against.

    python benchmarks/factor_cost.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from icp.methods.sparsegpt import _upper_factor_of_inverse_by_flip


def timed(fn, repeats: int) -> float:
    fn()  # library handles, workspaces
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        started = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def hessian(n: int) -> torch.Tensor:
    g = torch.Generator(device="cuda").manual_seed(n)
    x = torch.randn(2 * n, n, device="cuda", generator=g)
    h = x.t() @ x / (2 * n)
    h.diagonal().add_(0.01 * h.diagonal().mean())
    return h


def steps(n: int, repeats: int) -> list[dict]:
    h = hessian(n)
    lower = torch.linalg.cholesky_ex(h)[0]
    inverse = torch.cholesky_inverse(lower)
    a32 = torch.randn(n, n, device="cuda")
    a16 = a32.half()
    cases = [  # (path, step, function, nominal flop)
        ("reference", "cholesky_ex(H)", lambda: torch.linalg.cholesky_ex(h), n**3 / 3),
        ("reference", "cholesky_inverse(L)", lambda: torch.cholesky_inverse(lower), 2 * n**3),
        ("reference", "cholesky_ex(H^-1, upper)", lambda: torch.linalg.cholesky_ex(inverse, upper=True), n**3 / 3),
        ("flip", "whole factor", lambda: _upper_factor_of_inverse_by_flip(h.clone()), n**3 / 3 + n**3),
        ("rate", "fp32 GEMM n x n x n", lambda: a32 @ a32, 2 * n**3),
        ("rate", "fp16 GEMM n x n x n", lambda: a16 @ a16, 2 * n**3),
    ]
    rows = []
    for path, step, fn, flop in cases:
        seconds = timed(fn, repeats)
        rows.append({"n": n, "path": path, "step": step, "seconds": seconds, "nominal_tflop": flop / 1e12,
                     "tflop_per_s": flop / seconds / 1e12})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[4096, 11008, 16384])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 rate is CUDA cores', as the factor's GEMMs run
    gpu = torch.cuda.get_device_name(0)
    rows = [row for n in args.sizes for row in steps(n, args.repeats)]
    lines = ["| n | path | step | seconds | nominal TFLOP | TFLOP/s |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['n']} | {r['path']} | {r['step']} | {r['seconds']:.4f} | {r['nominal_tflop']:.2f} "
                     f"| {r['tflop_per_s']:.1f} |")
    lines.append(f"\n{gpu}, torch {torch.__version__}; median of {args.repeats} after one untimed call")
    slug = gpu.lower().replace("nvidia", "").split()[0]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"factor_cost_{slug}.json").write_text(json.dumps({"gpu": gpu, "torch": torch.__version__,
                                                                    "rows": rows}, indent=1))
    (args.out / f"factor_cost_{slug}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

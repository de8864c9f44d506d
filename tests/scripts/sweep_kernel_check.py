"""Checks the Triton SparseGPT sweep against the plain torch sweep on the same random inputs.

Run on a GPU, or on the CPU under Triton's interpreter (TRITON_INTERPRET=1, set before import):
    TRITON_INTERPRET=1 python tests/scripts/sweep_kernel_check.py
Prints one JSON line per case; exits 1 if any case disagrees.
"""

from __future__ import annotations

import json
import sys

import torch

from icp.methods.kernels.obs_sweep import sweep_columns as fused
from icp.methods.masks import lowest_k_mask, prune_count
from icp.methods.quant import ChannelGrid
from icp.methods.sparsegpt import sweep_columns as plain


def inverse_factor(cols: int, generator: torch.Generator, device: str) -> torch.Tensor:
    x = torch.randn(4 * cols, cols, generator=generator) * (torch.rand(cols, generator=generator) + 0.2)
    hessian = 2 * x.t() @ x / x.shape[0] + 0.01 * torch.eye(cols)
    return torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(hessian)), upper=True).contiguous().to(device)


def case(rows: int, cols: int, n: int, m: int, bits: int, seed: int, device: str) -> dict:
    g = torch.Generator().manual_seed(seed)
    hinv = inverse_factor(cols, g, device)
    weight = torch.randn(rows, cols + 7, generator=g).to(device)
    block = weight[:, 3 : 3 + cols]  # a strided view, as the pruner passes it
    grid = ChannelGrid.fit(block, bits) if bits < 16 else None
    mask = None
    if not m:
        scores = block.pow(2) / torch.diag(hinv).unsqueeze(0).pow(2)
        mask = lowest_k_mask(scores, prune_count(block.numel(), 0.6))
    before = weight.clone()
    kept_ref, err_ref, mask_ref = plain(block, hinv, None if mask is None else mask.clone(), n, m, grid)
    kept, err, mask_out = fused(block, hinv, mask, n, m, grid)
    rel = lambda a, b: float((a - b).norm() / b.norm().clamp_min(1e-30))  # noqa: E731
    result = {
        "rows": rows, "cols": cols, "pattern": f"{n}:{m}" if m else "unstructured", "bits": bits,
        "mask_mismatch": int((mask_out != mask_ref).sum()), "kept_rel_err": rel(kept, kept_ref),
        "err_rel_err": rel(err, err_ref), "input_untouched": bool(torch.equal(before, weight)),
    }
    result["ok"] = (result["mask_mismatch"] == 0 and result["kept_rel_err"] < 1e-3 and result["err_rel_err"] < 1e-3
                    and result["input_untouched"] and bool(torch.isfinite(kept).all()))
    if grid is not None:
        result["on_grid"] = grid.on_grid(kept.masked_fill(mask_out, 0))
        result["ok"] = result["ok"] and result["on_grid"]
    return result


def main() -> int:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cases = [(40, 32, 0, 0, 16), (40, 32, 2, 4, 16), (24, 64, 4, 8, 16), (40, 32, 0, 0, 4), (33, 32, 2, 4, 3),
             (17, 24, 0, 0, 16)]
    if device == "cuda":
        cases += [(4096, 128, 0, 0, 16), (4096, 128, 2, 4, 4), (11008, 128, 4, 8, 3), (1000, 64, 0, 0, 4)]
    failed = 0
    for seed, (rows, cols, n, m, bits) in enumerate(cases):
        result = case(rows, cols, n, m, bits, seed, device)
        failed += not result["ok"]
        print(json.dumps(result), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

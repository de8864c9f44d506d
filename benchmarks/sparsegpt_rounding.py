"""How far SparseGPT's roundings carry, on the CPU, on gpu_checks.py's data (a 4096 x 4096 layer,
8192 correlated fp16 input rows, 50 %): the plain fp32 path, the lazy update groups
(`lazy_columns`), the flip factor (`flip_factor`) and both, each against the plain fp32 path and
against the same sweep in float64 (Hessian, factor and updates).

    python benchmarks/sparsegpt_rounding.py [columns] > benchmarks/results/sparsegpt_rounding_cpu.txt
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from icp.methods.sparsegpt import InputHessian, sweep_blocks, sweep_columns
from icp.methods.pattern import Pattern
torch.set_num_threads(2)
g = torch.Generator().manual_seed(0)
rows = cols = int(sys.argv[1]) if len(sys.argv) > 1 else 4096
mixing = torch.eye(cols) + 0.05 * torch.randn(cols, cols, generator=g)
scales = torch.rand(cols, generator=g) * 2 + 0.1
x = ((torch.randn(8 * 1024, cols, generator=g) @ mixing) * scales).half()
held = ((torch.randn(1024, cols, generator=g) @ mixing) * scales).half()
weight = (torch.randn(rows, cols, generator=g) * 0.02).half()
pattern = Pattern(sparsity=0.5)

def run(dtype, flip, group):
    h = InputHessian(cols, "cpu")
    if dtype == torch.float64:
        h.matrix = h.matrix.double()
        for c in x.split(2048):
            h.matrix.addmm_(c.double().t(), c.double(), alpha=2 / x.shape[0])
        h.tokens = x.shape[0]
    else:
        for c in x.split(2048):
            h.add_batch(c)
    hinv, dead = h.inverse_factor(0.01, by_flip=flip)
    w = weight.to(dtype).clone()
    mask = sweep_blocks(w, hinv, pattern, None, sweep_columns, 128, group)
    return mask, (held.double() @ w.double().t()), hinv

ref_mask, ref_out, ref_hinv = run(torch.float64, False, 128)
base_mask, base_out, base_hinv = None, None, None
for name, flip, group in (("plain", False, 128), ("lazy", False, 1024), ("flip", True, 128), ("flip+lazy", True, 1024)):
    mask, out, hinv = run(torch.float32, flip, group)
    if base_mask is None:
        base_mask, base_out, base_hinv = mask, out, hinv
    print(f"{name:8s} vs plain: mask {float((mask != base_mask).float().mean()):.2e} out {float((out - base_out).norm() / base_out.norm()):.2e} hinv {float((hinv.double() - base_hinv.double()).norm() / base_hinv.double().norm()):.2e}"
          f" | vs fp64: mask {float((mask != ref_mask).float().mean()):.2e} out {float((out - ref_out).norm() / ref_out.norm()):.2e} hinv {float((hinv.double() - ref_hinv).norm() / ref_hinv.norm()):.2e}", flush=True)

"""SparseGPT's column-block sweep as one Triton kernel.

The plain sweep (`icp.methods.sparsegpt.sweep_columns`) visits the block's columns one by one and
issues about ten small kernels per column. Rows never interact inside a block (every row is updated
with its own error times a row of the shared inverse-Hessian factor), so here one program owns a
slab of rows, holds their block of weights, results and errors in registers, and walks all
columns itself: one launch per column block instead of ~10 per column.

Per column i of the block, for every row of the slab (U: the block of the upper Cholesky factor
of H^-1, d = U_ii):
    kept  = 0 if the weight is pruned, else w_i   (then rounded to the row's grid when quantizing)
    err   = (w_i - kept) / d
    w_j  -= err * U_ij  for j >= i                 (spreads the error over the later columns)
With N:M, the group starting at column i is chosen there, from the current (already updated)
weights: the M - N lowest w^2 / d^2 of the group are pruned, ties to the lower column.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

SLAB_ROWS = 16  # rows per program: a 16 x 128 fp32 tile is 16 registers a thread at 4 warps


@triton.jit
def _round_half_even(x):
    """torch.round's rounding (ties to even), exact for |x| < 2**22."""
    low = tl.floor(x)
    frac = x - low
    low_is_odd = (low - 2.0 * tl.floor(low * 0.5)) == 1.0
    up = (frac > 0.5) | ((frac == 0.5) & low_is_odd)
    return tl.where(up, low + 1.0, low)


@triton.jit
def _sweep_kernel(
    w_ptr, stride_w,          # [rows, ncols] weights of the block (a strided view), read only
    u_ptr, stride_u,          # [ncols, ncols] block of the upper inverse-Hessian factor
    mask_ptr,                 # [rows, ncols] int8 prune mask: read (unstructured) or written (N:M)
    kept_ptr, err_ptr,        # [rows, ncols] outputs: the block's final values and scaled errors
    scale_ptr, zero_ptr,      # [rows] the quantization grid (read when QUANT)
    rows, ncols, maxq,
    N: tl.constexpr, M: tl.constexpr, QUANT: tl.constexpr,
    SLAB: tl.constexpr, BLOCK: tl.constexpr,
):
    r = tl.program_id(0) * SLAB + tl.arange(0, SLAB)
    c = tl.arange(0, BLOCK)
    rmask = r < rows
    cmask = c < ncols
    tile = rmask[:, None] & cmask[None, :]
    out_offsets = r[:, None] * ncols + c[None, :]

    w = tl.load(w_ptr + r[:, None] * stride_w + c[None, :], mask=tile, other=0.0)
    if M == 0:
        prune = tl.load(mask_ptr + out_offsets, mask=tile, other=0) != 0
    else:
        prune = tl.zeros([SLAB, BLOCK], dtype=tl.int1)
    if QUANT:
        scale = tl.load(scale_ptr + r, mask=rmask, other=1.0)
        zero = tl.load(zero_ptr + r, mask=rmask, other=0.0)
    diag = tl.load(u_ptr + c * stride_u + c, mask=cmask, other=1.0)
    kept = tl.zeros([SLAB, BLOCK], dtype=tl.float32)
    err = tl.zeros([SLAB, BLOCK], dtype=tl.float32)

    for i in range(ncols):
        if M > 0:
            if i % M == 0:  # choose this group's pruned weights from the current values
                score = tl.math.div_rn(w * w, (diag * diag)[None, :])
                rank = tl.zeros([SLAB, BLOCK], dtype=tl.int32)
                for j in tl.static_range(M):
                    s_j = tl.sum(tl.where((c == i + j)[None, :], score, 0.0), axis=1)[:, None]
                    below = (s_j < score) | ((s_j == score) & ((i + j) < c)[None, :])
                    rank += below.to(tl.int32)
                in_group = ((c >= i) & (c < i + M))[None, :]
                prune = tl.where(in_group, rank < (M - N), prune)
        here = (c == i)[None, :]
        w_i = tl.sum(tl.where(here, w, 0.0), axis=1)
        kept_i = tl.sum(tl.where(here & (prune == 0), w, 0.0), axis=1)
        if QUANT:
            q = _round_half_even(tl.math.div_rn(kept_i, scale)) + zero
            kept_i = scale * (tl.minimum(tl.maximum(q, 0.0), maxq) - zero)
        err_i = tl.math.div_rn(w_i - kept_i, tl.load(u_ptr + i * stride_u + i))
        kept = tl.where(here, kept_i[:, None], kept)
        err = tl.where(here, err_i[:, None], err)
        u_row = tl.load(u_ptr + i * stride_u + c, mask=cmask & (c >= i), other=0.0)
        w = w - err_i[:, None] * u_row[None, :]

    tl.store(kept_ptr + out_offsets, kept, mask=tile)
    tl.store(err_ptr + out_offsets, err, mask=tile)
    if M > 0:
        tl.store(mask_ptr + out_offsets, prune.to(tl.int8), mask=tile)


def sweep_columns(
    block: torch.Tensor,
    hinv_block: torch.Tensor,
    prune_mask: torch.Tensor | None,
    n: int = 0,
    m: int = 0,
    grid=None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Same contract as the plain `sweep_columns`: (final values, scaled errors, prune mask) of one
    column block. `block` ([rows, ncols] fp32, any row stride) is only read; `prune_mask` is the
    unstructured mask, or None with N:M (then chosen inside, group by group)."""
    rows, ncols = block.shape
    if block.stride(1) != 1 or hinv_block.stride(1) != 1:
        raise ValueError("the sweep kernel needs unit column stride")
    if m and ncols % m:
        raise ValueError(f"a column block of {ncols} columns does not hold whole {n}:{m} groups")
    kept = torch.empty(rows, ncols, device=block.device, dtype=torch.float32)
    err = torch.empty_like(kept)
    if m:
        mask = torch.empty(rows, ncols, device=block.device, dtype=torch.int8)
    else:
        mask = prune_mask.to(torch.int8).contiguous()
    if grid is not None:
        scale = grid.scale.reshape(-1).float().contiguous()
        zero = grid.zero.reshape(-1).float().contiguous()
        maxq = float(grid.maxq)
    else:
        scale = zero = kept  # never read
        maxq = 0.0
    _sweep_kernel[(triton.cdiv(rows, SLAB_ROWS),)](
        block, block.stride(0), hinv_block, hinv_block.stride(0), mask, kept, err, scale, zero,
        rows, ncols, maxq,
        N=n, M=m, QUANT=grid is not None, SLAB=SLAB_ROWS, BLOCK=triton.next_power_of_2(ncols), num_warps=4,
        enable_fp_fusion=False,  # no fused multiply-adds: the same roundings as the torch sweep's separate ops
    )
    return kept, err, mask.bool()

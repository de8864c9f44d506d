"""Turning importance scores into prune masks (True = weight is removed)."""

from __future__ import annotations

import torch


def prune_count(numel: int, sparsity: float) -> int:
    """How many of `numel` weights a layer at `sparsity` removes (rounded to the nearest)."""
    return int(round(numel * sparsity))


def lowest_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of exactly the `k` lowest-scoring entries over the whole tensor; ties at the threshold
    go to the lowest flat indices."""
    flat = scores.flatten()
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if flat.is_cuda:
        return _lowest_k_by_stable_sort(flat, k).view_as(scores)
    threshold = flat.kthvalue(k).values  # faster than topk for large k
    mask = flat < threshold
    missing = k - int(mask.sum())
    if missing > 0:  # ties at the threshold: take the first ones, so exactly k are removed
        mask[(flat == threshold).nonzero().flatten()[:missing]] = True
    return mask.view_as(scores)


def _lowest_k_by_stable_sort(flat: torch.Tensor, k: int) -> torch.Tensor:
    """The same mask as the threshold-and-ties path, without reading anything back to the host
    (no device sync: SparseGPT calls this once per column block). A stable sort orders ties by
    index, so its first k positions are every entry below the k-th value plus the first ties.
    (CUDA's kthvalue selects in one thread block; a sort is far faster there anyway.)"""
    first_k = torch.sort(flat, stable=True).indices[:k]
    return torch.zeros_like(flat, dtype=torch.bool).index_fill_(0, first_k, True)


def lowest_per_row_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Mask of the lowest `sparsity` fraction of each row (the same count in every row)."""
    k = int(scores.shape[1] * sparsity)
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if k > 0:
        mask.scatter_(1, torch.topk(scores, k, dim=1, largest=False).indices, True)
    return mask


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the `n` highest scores in every group of `m` consecutive columns of each row."""
    rows, cols = scores.shape
    if cols % m:
        raise ValueError(f"N:M pattern {n}:{m} needs the input dimension ({cols}) divisible by {m}")
    groups = scores.reshape(rows, cols // m, m)
    drop = torch.topk(groups, m - n, dim=2, largest=False).indices
    mask = torch.zeros_like(groups, dtype=torch.bool)
    mask.scatter_(2, drop, True)
    return mask.reshape(rows, cols)


def check_nm(weight: torch.Tensor, n: int, m: int) -> bool:
    """True when every group of `m` consecutive input weights holds at most `n` non-zeros."""
    rows, cols = weight.shape
    nonzero = (weight.reshape(rows, cols // m, m) != 0).sum(dim=2)
    return bool((nonzero <= n).all())

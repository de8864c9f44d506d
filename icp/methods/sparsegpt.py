"""SparseGPT (Frantar & Alistarh, 2023): one-shot OBS pruning with the layer Hessian H = 2 X X^T.

Columns are swept left to right in blocks; inside a block the mask is chosen from
w^2 / [H^-1]_jj^2, each removed (and, with `wbits`, each quantized) weight's error is
spread over the not-yet-visited columns through the Cholesky factor of H^-1.

Linears that read the same input (q/k/v; gate/up) share one `InputHessian` and one inverse
factor. The in-block sweep has two implementations with one contract: `sweep_columns` below (plain
torch: the statement of the algorithm and the CPU path) and a fused Triton kernel
(`kernels.obs_sweep`), used on CUDA unless `kernel="torch"`.
"""

from __future__ import annotations

from functools import cache

import torch
from torch import nn

from .base import LayerPruner, PruneResult
from .kernels import triton_available
from .masks import lowest_k_mask, nm_mask, prune_count
from .pattern import Pattern
from .quant import ChannelGrid

KERNELS = ("auto", "triton", "torch")


@cache
def _half_gemm_into_fp32() -> bool:
    """Whether this torch multiplies fp16/bf16 matrices into an fp32 result (`out_dtype`, CUDA)."""
    try:
        a = torch.ones(16, 16, device="cuda", dtype=torch.float16)
        out = torch.zeros(16, 16, device="cuda", dtype=torch.float32)
        torch.addmm(out, a, a, out_dtype=torch.float32, out=out)
        return bool(out[0, 0] == 16)
    except (TypeError, RuntimeError, NotImplementedError):
        return False


class InputHessian:
    """H = (2 / n) * sum over the n tokens seen of x x^T, for the linears that read input x.

    On CUDA with half-precision inputs the products run on the tensor cores with fp32
    accumulation and an fp32 result (no fp32 copy of the activations); otherwise the inputs are
    upcast to fp32 first, as the reference implementation does.
    """

    def __init__(self, columns: int, device: torch.device | str) -> None:
        self.columns = columns
        self.matrix: torch.Tensor | None = torch.zeros(columns, columns, device=device, dtype=torch.float32)
        self.tokens = 0
        self.users = 0  # pruners still to solve with it; the factor is dropped after the last
        self._factor: tuple[torch.Tensor, torch.Tensor] | None = None
        self._info: torch.Tensor | None = None  # factorisation status, checked once read back
        self._percdamp: float | None = None  # the dampening it was factorised with (for the error)

    def add_batch(self, inputs: torch.Tensor) -> None:
        x = inputs.reshape(-1, self.columns)
        new = x.shape[0]
        total = self.tokens + new
        if x.is_cuda and x.dtype in (torch.float16, torch.bfloat16) and _half_gemm_into_fp32():
            torch.addmm(self.matrix, x.t(), x, beta=self.tokens / total, alpha=2.0 / total,
                        out_dtype=torch.float32, out=self.matrix)
        else:  # running mean of 2 x x^T over all tokens seen so far
            self.matrix *= self.tokens / total
            x = x.float() * (2.0 / total) ** 0.5
            self.matrix.addmm_(x.t(), x)
        self.tokens = total

    def inverse_factor(self, percdamp: float, by_flip: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(upper Cholesky factor of the dampened H^-1, mask of columns never activated).

        Computed once; later callers (the other linears of the group) get the same factor. Nothing
        here reads back to the host (no boolean indexing, `cholesky_ex`): on CUDA the host runs on
        to queue the sweeps; a failed factorisation is raised by `check_factor` after them.
        `by_flip` (the `flip_factor` option) reaches the same factor with one Cholesky factorisation and one
        triangular solve instead of two factorisations and an inversion (see `_upper_factor_of_inverse_by_flip`)."""
        if self._factor is None:
            self._percdamp = percdamp
            dead = self._dampen(percdamp)
            factorise = _upper_factor_of_inverse_by_flip if by_flip else _upper_factor_of_inverse_reference
            # handed over, not kept here: the factorisation frees the matrix as soon as its factor
            # exists (on a 16384-wide layer one fp32 n x n matrix is 1 GiB)
            upper, self._info = factorise(self._take_matrix())
            self._factor = (upper.contiguous(), dead)  # row-major: rows are read
            if not upper.is_cuda:
                self.check_factor()
        return self._factor

    def _take_matrix(self) -> torch.Tensor:
        matrix, self.matrix = self.matrix, None
        return matrix

    def _dampen(self, percdamp: float) -> torch.Tensor:
        """Dampen the matrix in place (a never-activated column's diagonal set to 1 first); returns
        the mask of those columns. No view of the matrix outlives the call."""
        diagonal = self.matrix.diagonal()
        dead = diagonal == 0
        diagonal.masked_fill_(dead, 1.0)
        diagonal.add_(percdamp * torch.mean(diagonal.contiguous()))  # contiguous: the reference's reduction order
        return dead

    def check_factor(self) -> None:
        """Raise if the dampened Hessian (or its inverse) was not positive definite."""
        if self._info is not None and int(self._info) != 0:
            raise torch.linalg.LinAlgError(
                f"SparseGPT: the dampened layer Hessian is not positive definite (non-finite "
                f"activations, or raise percdamp from {self._percdamp})")
        self._info = None

    def done(self) -> None:
        """One user has finished; after the last, the memory goes."""
        self.users -= 1
        if self.users <= 0:
            self.matrix = None
            self._factor = None


def _upper_factor_of_inverse_reference(hessian: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(U, status) with U upper triangular and U^T U = H^-1, in the reference's three steps:
    Cholesky of H, its inverse, Cholesky of that. `hessian` is consumed: freed after its
    factorisation where the caller keeps no other reference, so at most three n x n matrices
    (inside `cholesky_inverse`) are alive at once."""
    factor, info = torch.linalg.cholesky_ex(hessian)
    del hessian
    inverse = torch.cholesky_inverse(factor)
    del factor
    upper, info_inverse = torch.linalg.cholesky_ex(inverse, upper=True)
    return upper, info + info_inverse


def _upper_factor_of_inverse_by_flip(hessian: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(U, status) with U upper triangular and U^T U = H^-1, from one factorisation.

    With J the reversal permutation and J H J = L L^T (Cholesky), H^-1 = (J L^-T J)(J L^-1 J), and
    J L^-1 J is upper triangular with a positive diagonal: the (unique) upper Cholesky factor of
    H^-1. `hessian` is consumed."""
    flipped = hessian.flip((0, 1))
    del hessian
    lower, info = torch.linalg.cholesky_ex(flipped)
    del flipped
    identity = torch.eye(lower.shape[0], device=lower.device, dtype=lower.dtype)
    inverse_lower = torch.linalg.solve_triangular(lower, identity, upper=False)  # no out=: see README, #30
    del lower, identity
    return inverse_lower.flip((0, 1)), info


def sweep_columns(
    block: torch.Tensor,
    hinv_block: torch.Tensor,
    prune_mask: torch.Tensor | None,
    n: int = 0,
    m: int = 0,
    grid: ChannelGrid | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """OBS sweep over one column block: (final values, errors / d, prune mask).

    `prune_mask` is the block's unstructured mask, or None with N:M: each group of m columns is then
    chosen when the sweep reaches it, from the weights as updated so far. `block` is not modified.
    """
    block = block.clone()
    result = torch.zeros_like(block)
    errors = torch.zeros_like(block)
    hinv_diag = torch.diag(hinv_block)
    block_mask = torch.zeros_like(block, dtype=torch.bool) if prune_mask is None else prune_mask
    for i in range(block.shape[1]):
        if m and i % m == 0:
            group = slice(i, i + m)
            scores = block[:, group].pow(2) / hinv_diag[group].unsqueeze(0).pow(2)
            block_mask[:, group] = nm_mask(scores, n, m)
        column = block[:, i]
        kept = column.masked_fill(block_mask[:, i], 0.0)
        if grid is not None:
            kept = grid.quantize(kept)
        result[:, i] = kept
        error = (column - kept) / hinv_block[i, i]
        block[:, i:] -= error.unsqueeze(1) * hinv_block[i, i:].unsqueeze(0)
        errors[:, i] = error
    return result, errors, block_mask


class SparseGPTPruner(LayerPruner):
    """`kernel`: "auto" (the Triton sweep on CUDA when Triton imports, else torch), "triton" or "torch".

    `lazy_columns` (off by default; issue #30): the columns after each group of this many are
    updated once per group, by one product with all the group's errors (`sweep_blocks`), instead of
    after every `blocksize` block. The same sums grouped differently: on the CPU the masks stay
    equal, but on an H100 a few near-ties flipped (2e-5 of an 11008 x 4096 layer's mask, its output
    2.3e-3 apart: over the fast-path bar) for 1 s of OPT-6.7B's 34 s. So it is opt-in and part of
    the run's hash.

    `flip_factor` (off by default; issue #30): one Cholesky factorisation by the flip instead of
    two and an inversion (`InputHessian.inverse_factor(by_flip=True)`). Its factor is as close to
    a float64 one as the reference's, but rounded differently, and SparseGPT's mask choices amplify
    any rounding: on correlated 4096-wide inputs 3e-4 of the mask and 8e-3 of the output move,
    exactly as far as the fp32 reference itself sits from a float64 run. So it is opt-in and part of
    the run's hash."""

    shares_statistics = True

    def __init__(self, layer: nn.Linear, blocksize: int = 128, percdamp: float = 0.01, kernel: str = "auto",
                 lazy_columns: int | None = None, flip_factor: bool = False,
                 shared_with: "SparseGPTPruner | None" = None) -> None:
        super().__init__(layer)
        if kernel not in KERNELS:
            raise ValueError(f"SparseGPT kernel must be one of {KERNELS}, got {kernel!r}")
        check_lazy_columns(lazy_columns, blocksize)
        self.blocksize = blocksize
        self.percdamp = percdamp
        self.kernel = kernel
        self.lazy_columns = lazy_columns
        self.flip_factor = bool(flip_factor)
        self.feeds_hessian = shared_with is None  # a shared Hessian is fed by the group's first linear
        self.hessian = shared_with.hessian if shared_with else InputHessian(self.columns, layer.weight.device)
        self.hessian.users += 1

    def add_batch(self, inputs: torch.Tensor) -> None:
        if self.feeds_hessian:
            self.hessian.add_batch(inputs)

    def use_triton(self, weight: torch.Tensor, pattern: Pattern) -> bool:
        fits = not pattern.is_nm or self.blocksize % pattern.m == 0
        if self.kernel == "triton":
            if not (weight.is_cuda and triton_available() and fits):
                raise ValueError("SparseGPT kernel 'triton' needs a CUDA device, Triton, and a blocksize "
                                 "that holds whole N:M groups")
            return True
        return self.kernel == "auto" and weight.is_cuda and triton_available() and fits

    @torch.no_grad()
    def prune(self, pattern: Pattern) -> PruneResult:
        self._check(pattern)
        dtype = self.layer.weight.dtype
        weight = self.layer.weight.data.clone().float()
        fused = self.use_triton(weight, pattern)
        hinv, dead = self.hessian.inverse_factor(self.percdamp, by_flip=self.flip_factor)
        weight.masked_fill_(dead.unsqueeze(0), 0.0)
        grid = ChannelGrid.fit(weight, pattern.wbits) if pattern.quantize else None
        if fused:
            from .kernels.obs_sweep import sweep_columns as sweep
        else:
            sweep = sweep_columns
        mask = sweep_blocks(weight, hinv, pattern, grid, sweep, self.blocksize, self.lazy_columns or self.blocksize)
        self.hessian.check_factor()
        self.hessian.done()
        self.layer.weight.data = weight.to(dtype)
        return PruneResult(mask=mask, grid=grid)


def check_lazy_columns(lazy_columns: int | None, blocksize: int) -> None:
    """`lazy_columns` must hold whole column blocks (None: the reference order)."""
    if lazy_columns is not None and not (isinstance(lazy_columns, int) and lazy_columns >= blocksize
                                         and lazy_columns % blocksize == 0):
        raise ValueError(f"lazy_columns: {lazy_columns!r} is not a multiple of blocksize ({blocksize})")


def sweep_blocks(weight: torch.Tensor, hinv: torch.Tensor, pattern: Pattern, grid: ChannelGrid | None,
                 sweep, blocksize: int, group_columns: int) -> torch.Tensor:
    """Prune fp32 `weight` in place, `blocksize` columns at a time; returns the prune mask.

    After each block its errors are spread over the later columns of its group of `group_columns`
    columns at once; the columns after the group are updated once the whole group is done, with
    all its errors together. `group_columns == blocksize` is the reference order (every later
    column updated after every block); a larger group gives the same weights up to rounding (the
    same sums, grouped differently) with far fewer, larger products.
    """
    columns = weight.shape[1]
    mask = torch.zeros_like(weight, dtype=torch.bool)
    lazy = group_columns > blocksize
    group_columns = group_columns - group_columns % blocksize if lazy else blocksize
    for group_start in range(0, columns, group_columns):
        group_end = min(group_start + group_columns, columns)
        if lazy:
            group_errors = torch.empty(weight.shape[0], group_end - group_start, device=weight.device, dtype=weight.dtype)
        for start in range(group_start, group_end, blocksize):
            end = min(start + blocksize, group_end)
            block = weight[:, start:end]
            hinv_block = hinv[start:end, start:end]
            block_mask = None
            if not pattern.is_nm:
                scores = block.pow(2) / torch.diag(hinv_block).unsqueeze(0).pow(2)
                block_mask = lowest_k_mask(scores, prune_count(block.numel(), pattern.sparsity))
            result, errors, block_mask = sweep(block, hinv_block, block_mask, pattern.n, pattern.m, grid)
            weight[:, start:end] = result
            mask[:, start:end] = block_mask
            if not lazy:
                weight[:, end:] -= errors @ hinv[start:end, end:]
                continue
            group_errors[:, start - group_start : end - group_start] = errors
            if end < group_end:  # in place, the product's epilogue does the subtraction (no temporary)
                weight[:, end:group_end].addmm_(errors, hinv[start:end, end:group_end], alpha=-1.0)
        if lazy and group_end < columns:
            weight[:, group_end:].addmm_(group_errors, hinv[group_start:group_end, group_end:], alpha=-1.0)
    return mask

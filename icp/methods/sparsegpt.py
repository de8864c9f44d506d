"""SparseGPT (Frantar & Alistarh, 2023): one-shot OBS pruning with the layer Hessian H = 2 X X^T.

Columns are swept left to right in blocks; inside a block the mask is chosen from
w^2 / [H^-1]_jj^2, each removed (and, with `wbits`, each quantized) weight's error is
spread over the not-yet-visited columns through the Cholesky factor of H^-1.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import LayerPruner, PruneResult
from .masks import lowest_k_mask, nm_mask, prune_count
from .pattern import Pattern
from .quant import ChannelGrid


class SparseGPTPruner(LayerPruner):
    def __init__(self, layer: nn.Linear, blocksize: int = 128, percdamp: float = 0.01) -> None:
        super().__init__(layer)
        self.blocksize = blocksize
        self.percdamp = percdamp
        self.hessian = torch.zeros(self.columns, self.columns, device=layer.weight.device, dtype=torch.float32)
        self.tokens = 0

    def add_batch(self, inputs: torch.Tensor) -> None:
        x = inputs.reshape(-1, self.columns).float()
        new = x.shape[0]
        # running mean of 2 x x^T over all tokens seen so far
        self.hessian *= self.tokens / (self.tokens + new)
        self.tokens += new
        x = x * (2.0 / self.tokens) ** 0.5
        self.hessian.addmm_(x.t(), x)

    def _inverse_hessian_factor(self, weight: torch.Tensor) -> torch.Tensor:
        """Upper Cholesky factor of the dampened inverse Hessian; zeroes columns never activated."""
        hessian = self.hessian
        self.hessian = None
        dead = torch.diag(hessian) == 0
        hessian[dead, dead] = 1.0
        weight[:, dead] = 0.0
        diagonal = torch.arange(self.columns, device=hessian.device)
        hessian[diagonal, diagonal] += self.percdamp * torch.mean(torch.diag(hessian))
        factor = torch.linalg.cholesky(hessian)
        inverse = torch.cholesky_inverse(factor)
        return torch.linalg.cholesky(inverse, upper=True)

    @torch.no_grad()
    def prune(self, pattern: Pattern) -> PruneResult:
        self._check(pattern)
        dtype = self.layer.weight.dtype
        weight = self.layer.weight.data.clone().float()
        hinv = self._inverse_hessian_factor(weight)
        grid = ChannelGrid.fit(weight, pattern.wbits) if pattern.quantize else None
        mask = torch.zeros_like(weight, dtype=torch.bool)

        for start in range(0, self.columns, self.blocksize):
            end = min(start + self.blocksize, self.columns)
            block = weight[:, start:end].clone()
            result = torch.zeros_like(block)
            errors = torch.zeros_like(block)
            hinv_block = hinv[start:end, start:end]
            hinv_diag = torch.diag(hinv_block)

            if pattern.is_nm:
                block_mask = torch.zeros_like(block, dtype=torch.bool)
            else:
                scores = block.pow(2) / hinv_diag.unsqueeze(0).pow(2)
                block_mask = lowest_k_mask(scores, prune_count(block.numel(), pattern.sparsity))

            for i in range(end - start):
                if pattern.is_nm and i % pattern.m == 0:
                    group = slice(i, i + pattern.m)
                    scores = block[:, group].pow(2) / hinv_diag[group].unsqueeze(0).pow(2)
                    block_mask[:, group] = nm_mask(scores, pattern.n, pattern.m)
                column = block[:, i]
                kept = column.masked_fill(block_mask[:, i], 0.0)
                if grid is not None:
                    kept = grid.quantize(kept)
                result[:, i] = kept
                error = (column - kept) / hinv_block[i, i]
                block[:, i:] -= error.unsqueeze(1) * hinv_block[i, i:].unsqueeze(0)
                errors[:, i] = error

            weight[:, start:end] = result
            mask[:, start:end] = block_mask
            weight[:, end:] -= errors @ hinv[start:end, end:]

        self.layer.weight.data = weight.to(dtype)
        return PruneResult(mask=mask, grid=grid)

"""Per-output-channel asymmetric min-max weight quantization (the GPTQ/SparseGPT grid)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ChannelGrid:
    """A `2**bits`-level grid per output row: value = scale * (q - zero), q in [0, maxq]."""

    scale: torch.Tensor  # [rows, 1]
    zero: torch.Tensor  # [rows, 1]
    maxq: int

    @classmethod
    def fit(cls, weight: torch.Tensor, bits: int) -> "ChannelGrid":
        """Min-max grid of each row; the range always contains 0 so pruned weights stay exactly 0."""
        maxq = 2**bits - 1
        w = weight.float()
        wmin = torch.clamp(w.min(dim=1, keepdim=True).values, max=0)
        wmax = torch.clamp(w.max(dim=1, keepdim=True).values, min=0)
        flat = (wmin == 0) & (wmax == 0)
        wmin = torch.where(flat, torch.full_like(wmin, -1), wmin)
        wmax = torch.where(flat, torch.full_like(wmax, 1), wmax)
        scale = (wmax - wmin) / maxq
        zero = torch.round(-wmin / scale)
        return cls(scale=scale, zero=zero, maxq=maxq)

    def quantize(self, values: torch.Tensor) -> torch.Tensor:
        """Round `values` ([rows, k], or one column [rows]) to the grid; returns dequantized values."""
        scale, zero = self.scale, self.zero
        column = values.dim() == 1
        x = values.unsqueeze(1) if column else values
        q = torch.clamp(torch.round(x / scale) + zero, 0, self.maxq)
        out = scale * (q - zero)
        return out.squeeze(1) if column else out

    def on_grid(self, weight: torch.Tensor, atol: float = 1e-5) -> bool:
        """True when every entry of `weight` lies on its row's grid."""
        return bool(torch.allclose(self.quantize(weight.float()), weight.float(), atol=atol, rtol=0))

    def to_dict(self) -> dict[str, torch.Tensor]:
        return {"scale": self.scale.cpu(), "zero": self.zero.cpu()}

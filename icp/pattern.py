"""What a layer is asked to become: a sparsity pattern and an optional weight bit-width."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Pattern:
    """Unstructured sparsity `sparsity`, or N:M (keep `n` of every `m` consecutive input weights).

    `wbits` < 16 adds weight quantization to `wbits` bits (per output channel, asymmetric min-max).
    """

    sparsity: float = 0.0
    n: int = 0
    m: int = 0
    wbits: int = 16

    def __post_init__(self) -> None:
        if self.m or self.n:  # "2:0" or "0:4" is N:M gone wrong, never "unstructured at 0 %"
            if not (0 < self.n < self.m):
                raise ValueError(f"N:M pattern needs 0 < N < M, got {self.n}:{self.m}")
        elif not (0.0 <= self.sparsity < 1.0):
            raise ValueError(f"sparsity must lie in [0, 1), got {self.sparsity}")
        if not (2 <= self.wbits <= 16):
            raise ValueError(f"wbits must lie in [2, 16], got {self.wbits}")

    @property
    def is_nm(self) -> bool:
        return self.m > 0

    @property
    def quantize(self) -> bool:
        return self.wbits < 16

    @property
    def target_sparsity(self) -> float:
        return 1.0 - self.n / self.m if self.is_nm else self.sparsity

    def with_sparsity(self, sparsity: float) -> "Pattern":
        return Pattern(sparsity=sparsity, n=self.n, m=self.m, wbits=self.wbits)


_NM = re.compile(r"^(\d+):(\d+)$")


def parse_pattern(pattern: str, sparsity: float | None = None, wbits: int = 16) -> Pattern:
    """`"unstructured"` with a sparsity, or `"N:M"` (the sparsity then follows from N and M)."""
    if pattern == "unstructured":
        if sparsity is None:
            raise ValueError("unstructured pattern needs a sparsity")
        return Pattern(sparsity=float(sparsity), wbits=wbits)
    match = _NM.match(pattern)
    if not match:
        raise ValueError(f"unknown sparsity pattern {pattern!r}: use 'unstructured' or 'N:M' such as '2:4'")
    return Pattern(n=int(match.group(1)), m=int(match.group(2)), wbits=wbits)

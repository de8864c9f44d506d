"""Fast paths for the methods' inner loops. Each kernel has a plain torch twin in the method's own
module; that twin states the algorithm, is the CPU path, and is what the kernel is checked against."""

from __future__ import annotations

from functools import cache


@cache
def triton_available() -> bool:
    """True when Triton imports (the fused kernels need it, and a CUDA device to run on)."""
    try:
        import triton  # noqa: F401
    except Exception:  # pragma: no cover - depends on the install
        return False
    return True

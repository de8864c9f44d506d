"""Where a number came from: versions, machine, device."""

from __future__ import annotations

import os
import platform
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import torch


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} was asked for, but CUDA is not available here")
    return device


def process_age() -> float | None:
    """Seconds since this process was started (exec included), from /proc; None where /proc is absent."""
    try:
        start_ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None
    return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")


def versions() -> dict[str, str]:
    out = {}
    for name in ("icp-pruning", "torch", "transformers", "lm_eval", "segment_anything", "snakemake"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def machine(device: str) -> dict[str, Any]:
    info = {"host": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
            "cpu_threads": torch.get_num_threads(), "device": device}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info

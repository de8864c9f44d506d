"""GPUs for a workflow's jobs on a multi-GPU host, without a scheduler's help.

Snakemake's ``resources: gpu=N`` keeps at most N GPU jobs running, but it does not say which
GPU each should use. Before CUDA is touched, a job takes an exclusive lock on a free slot of one
GPU and restricts itself to that GPU with ``CUDA_VISIBLE_DEVICES``. Each GPU has
``ICP_JOBS_PER_GPU`` slots (the config's `jobs_per_gpu`, default 1: a GPU of its own; small
models can share), filled GPU by GPU in turn so the load spreads evenly. The lock belongs to the
process, so it is released when the job ends in any way, a kill included. A job that finds every
slot taken waits for one.

Nothing happens when ``CUDA_VISIBLE_DEVICES`` is already set (SLURM and most schedulers set it),
when the device was named explicitly (``cuda:N``), or when the host has fewer than two GPUs.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

_held: list[IO] = []  # open lock files: the lock lives as long as this process


def visible_gpu_count() -> int:
    """GPUs on this host according to nvidia-smi (0 when it is absent); does not initialise CUDA."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return len(out.stdout.split()) if out.returncode == 0 else 0


def lock_dir() -> Path:
    return Path(os.environ.get("ICP_GPU_LOCK_DIR", Path(tempfile.gettempdir()) / "icp-gpu-locks"))


def jobs_per_gpu() -> int:
    return max(1, int(os.environ.get("ICP_JOBS_PER_GPU") or 1))


def acquire_gpu(count: int, directory: Path | None = None, poll_seconds: float = 2.0, per_gpu: int = 1) -> int:
    """Lock a slot of one of GPUs 0..count-1 for this process (waiting while all are taken);
    returns the GPU's index. Slot k of every GPU is tried before slot k+1 of any."""
    directory = directory or lock_dir()
    directory.mkdir(parents=True, exist_ok=True)
    while True:
        for slot in range(per_gpu):
            for index in range(count):
                name = f"gpu{index}.lock" if slot == 0 else f"gpu{index}.{slot}.lock"
                handle = open(directory / name, "a+")
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    handle.close()
                    continue
                handle.seek(0)
                handle.truncate()
                handle.write(f"{os.getpid()}\n")
                handle.flush()
                _held.append(handle)
                return index
        time.sleep(poll_seconds)


def pin_job_to_one_gpu(device: str, log=print) -> int | None:
    """Give this job one GPU (a slot of it) when it may use any (see module docstring)."""
    if device not in ("auto", "cuda") or "CUDA_VISIBLE_DEVICES" in os.environ:
        return None
    count = visible_gpu_count()
    if count < 2:
        return None
    per_gpu = jobs_per_gpu()
    index = acquire_gpu(count, per_gpu=per_gpu)
    os.environ["CUDA_VISIBLE_DEVICES"] = str(index)
    log(f"pinned to GPU {index} of {count}" + (f" ({per_gpu} jobs per GPU)" if per_gpu > 1 else ""))
    return index


def limit_shared_gpu_memory(device: str, log=print) -> float | None:
    """With ICP_JOBS_PER_GPU = k > 1, cap this job's CUDA allocations at 1/k of the GPU, so one job
    that runs away (an out-of-memory error of its own) cannot starve the jobs sharing its GPU."""
    per_gpu = jobs_per_gpu()
    if per_gpu < 2 or not device.startswith(("cuda", "auto")):
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    fraction = 1.0 / per_gpu
    index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
    torch.cuda.set_per_process_memory_fraction(fraction, index)
    log(f"GPU shared by {per_gpu} jobs: this one may allocate {fraction:.0%} of its memory")
    return fraction

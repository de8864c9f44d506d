"""GPUs for a workflow's jobs on a multi-GPU host, without a scheduler's help.

Snakemake's ``resources: gpu=N`` keeps at most N GPU jobs running, but it does not say which
GPU each should use. Before CUDA is touched, a job takes an exclusive lock on a free slot of one
GPU and restricts itself to that GPU with ``CUDA_VISIBLE_DEVICES``. Each GPU has
``ICP_JOBS_PER_GPU`` slots (the config's `jobs_per_gpu`, default 1: a GPU of its own; small
models can share), filled GPU by GPU in turn so the load spreads evenly. The lock belongs to the
process, so it is released when the job ends in any way, a kill included. A job that finds every
slot taken waits for one. A timing job (2:4 inference) locks every slot of one GPU, so nothing
shares the GPU it times on; its rule also counts it as `jobs_per_gpu` GPU jobs for Snakemake.

Nothing happens when ``CUDA_VISIBLE_DEVICES`` is already set (SLURM and most schedulers set it),
when the device was named explicitly (``cuda:N``), or when the host has fewer than two GPUs.
"""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

_held: list[IO] = []  # open lock files: the lock lives as long as this process


def visible_gpu_count(proc_dir: Path = Path("/proc/driver/nvidia/gpus")) -> int:
    """GPUs on this host, without initialising CUDA: the NVIDIA driver's entry per GPU under
    /proc (instant), else nvidia-smi (up to seconds per call on some hosts), else 0."""
    if proc_dir.is_dir():
        return sum(1 for entry in proc_dir.iterdir() if entry.is_dir())
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return len(out.stdout.split()) if out.returncode == 0 else 0


def lock_dir() -> Path:
    """The GPU slot locks: one directory per user (another local user cannot plant files there)."""
    default = Path(tempfile.gettempdir()) / f"icp-gpu-locks-{os.getuid()}"
    return Path(os.environ.get("ICP_GPU_LOCK_DIR", default))


def _private_dir(directory: Path) -> Path:
    """`directory`, created for this user only; refused when it is a link or someone else's."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(directory)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise PermissionError(f"GPU lock directory {directory} is a link or belongs to another user; "
                              f"remove it or set ICP_GPU_LOCK_DIR to a directory of your own")
    return directory


def jobs_per_gpu() -> int:
    return max(1, int(os.environ.get("ICP_JOBS_PER_GPU") or 1))


def acquire_gpu(count: int, directory: Path | None = None, poll_seconds: float = 2.0, per_gpu: int = 1,
                slots: int = 1) -> int:
    """Lock `slots` slots of one of GPUs 0..count-1 for this process (waiting while no GPU has that
    many free); returns the GPU's index. Slot k of every GPU is tried before slot k+1 of any, so
    single-slot jobs spread evenly; a job asking for every slot (`slots` = `per_gpu`) gets a GPU
    to itself."""
    directory = _private_dir(directory or lock_dir())
    slots = min(max(1, slots), per_gpu)
    while True:
        if slots == 1:
            for slot in range(per_gpu):
                for index in range(count):
                    handle = _try_lock(_slot_file(directory, index, slot))
                    if handle is not None:
                        _held.append(handle)
                        return index
        else:
            for index in range(count):
                held = []
                for slot in range(per_gpu):
                    handle = _try_lock(_slot_file(directory, index, slot))
                    if handle is not None:
                        held.append(handle)
                    if len(held) == slots:
                        _held.extend(held)
                        return index
                for handle in held:  # too few free slots on this GPU: let them go again
                    handle.close()
        time.sleep(poll_seconds)


def _slot_file(directory: Path, index: int, slot: int) -> Path:
    return directory / (f"gpu{index}.lock" if slot == 0 else f"gpu{index}.{slot}.lock")


def _try_lock(path: Path) -> IO | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)  # a planted symlink fails here
    handle = os.fdopen(fd, "r+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def pin_job_to_one_gpu(device: str, slots: int = 1, log=print) -> int | None:
    """Give this job one GPU (`slots` of its slots) when it may use any (see module docstring)."""
    if device not in ("auto", "cuda") or "CUDA_VISIBLE_DEVICES" in os.environ:
        return None
    count = visible_gpu_count()
    if count < 2:
        return None
    per_gpu = jobs_per_gpu()
    index = acquire_gpu(count, per_gpu=per_gpu, slots=slots)
    os.environ["CUDA_VISIBLE_DEVICES"] = str(index)
    shared = f" ({min(slots, per_gpu)} of its {per_gpu} job slots)" if per_gpu > 1 else ""
    log(f"pinned to GPU {index} of {count}{shared}")
    return index


def limit_shared_gpu_memory(device: str, slots: int = 1, log=print) -> float | None:
    """With ICP_JOBS_PER_GPU = k > 1, cap this job's CUDA allocations at `slots`/k of the GPU (the
    share it holds), so one job that runs away (an out-of-memory error of its own) cannot starve the
    jobs sharing its GPU. A job holding every slot is not capped."""
    per_gpu = jobs_per_gpu()
    if slots >= per_gpu or not device.startswith(("cuda", "auto")):
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    fraction = slots / per_gpu
    index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
    torch.cuda.set_per_process_memory_fraction(fraction, index)
    log(f"GPU shared by {per_gpu} jobs: this one may allocate {fraction:.0%} of its memory")
    return fraction

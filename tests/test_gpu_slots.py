"""Jobs on a multi-GPU host each lock a GPU of their own (simulated with lock files, no GPU needed)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from icp import gpu_slots

HOLDER = """
import sys, time
from pathlib import Path
from icp.gpu_slots import acquire_gpu
index = acquire_gpu(int(sys.argv[1]), Path(sys.argv[2]), poll_seconds=0.1)
print(index, time.time(), flush=True)
time.sleep(float(sys.argv[3]))
"""


def _start(count, directory, hold):
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(count), str(directory), str(hold)],
                            stdout=subprocess.PIPE, text=True, env={**os.environ})


def test_concurrent_jobs_get_distinct_gpus_and_wait_when_all_are_taken(tmp_path):
    first = _start(2, tmp_path, 3.0)
    second = _start(2, tmp_path, 3.0)
    a = first.stdout.readline().split()
    b = second.stdout.readline().split()
    assert {a[0], b[0]} == {"0", "1"}
    started = time.time()
    third = _start(2, tmp_path, 0.0)  # both GPUs busy: waits for one to be released
    c = third.stdout.readline().split()
    assert float(c[1]) >= min(float(a[1]), float(b[1])) + 2.5
    assert time.time() - started >= 1.0
    for p in (first, second, third):
        p.wait(timeout=30)


def test_lock_is_released_when_a_job_is_killed(tmp_path):
    holder = _start(1, tmp_path, 60.0)
    assert holder.stdout.readline().split()[0] == "0"
    holder.kill()
    holder.wait()
    assert gpu_slots.acquire_gpu(1, tmp_path, poll_seconds=0.1) == 0


def test_no_pinning_when_the_scheduler_already_chose(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    monkeypatch.setattr(gpu_slots, "visible_gpu_count", lambda: 8)
    assert gpu_slots.pin_job_to_one_gpu("auto") is None
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert gpu_slots.pin_job_to_one_gpu("cuda:1") is None
    monkeypatch.setattr(gpu_slots, "visible_gpu_count", lambda: 1)
    assert gpu_slots.pin_job_to_one_gpu("auto") is None


def test_pinning_sets_cuda_visible_devices(monkeypatch, tmp_path):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("ICP_GPU_LOCK_DIR", str(tmp_path))
    monkeypatch.setattr(gpu_slots, "visible_gpu_count", lambda: 4)
    monkeypatch.setattr(gpu_slots, "_held", [])
    assert gpu_slots.pin_job_to_one_gpu("auto", log=lambda m: None) == 0
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert gpu_slots.pin_job_to_one_gpu("cuda", log=lambda m: None) == 1  # this process still holds GPU 0


def test_jobs_per_gpu_fill_every_gpu_in_turn(monkeypatch, tmp_path):
    monkeypatch.setattr(gpu_slots, "_held", [])
    got = [gpu_slots.acquire_gpu(2, tmp_path, poll_seconds=0.1, per_gpu=2) for _ in range(4)]
    assert got == [0, 1, 0, 1]  # slot 0 of each GPU, then slot 1 of each
    assert len(list(tmp_path.glob("*.lock"))) == 4
    monkeypatch.setenv("ICP_JOBS_PER_GPU", "3")
    assert gpu_slots.jobs_per_gpu() == 3


@pytest.fixture
def memory_caps(monkeypatch) -> list[tuple[float, int]]:
    """Four jobs per GPU on a CUDA device that records the memory fractions set on it."""
    import torch

    calls = []
    monkeypatch.setenv("ICP_JOBS_PER_GPU", "4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, d: calls.append((f, d)))
    return calls


def test_shared_gpu_memory_cap_names_the_device_index(monkeypatch, memory_caps):
    """The cap is set on the job's own device, given to torch as an index ("cuda" alone is refused)."""
    calls = memory_caps
    assert gpu_slots.limit_shared_gpu_memory("cuda", log=lambda m: None) == 0.25
    assert gpu_slots.limit_shared_gpu_memory("cuda:1", log=lambda m: None) == 0.25
    assert gpu_slots.limit_shared_gpu_memory("cpu", log=lambda m: None) is None
    assert calls == [(0.25, 0), (0.25, 1)]
    monkeypatch.setenv("ICP_JOBS_PER_GPU", "1")
    assert gpu_slots.limit_shared_gpu_memory("cuda", log=lambda m: None) is None


def test_a_timing_job_takes_every_slot_of_one_gpu(monkeypatch, tmp_path):
    """A job asking for all slots waits for a GPU with that many free, then shuts the others out."""
    monkeypatch.setattr(gpu_slots, "_held", [])
    assert gpu_slots.acquire_gpu(2, tmp_path, poll_seconds=0.1, per_gpu=2) == 0  # one slot of GPU 0
    assert gpu_slots.acquire_gpu(2, tmp_path, poll_seconds=0.1, per_gpu=2, slots=2) == 1  # all of GPU 1
    assert gpu_slots.acquire_gpu(2, tmp_path, poll_seconds=0.1, per_gpu=2) == 0  # GPU 0's other slot
    assert len(gpu_slots._held) == 4
    # every slot is now taken: a further job (another process) waits until a holder ends
    holder = _start(2, tmp_path, 0)
    time.sleep(1.0)
    assert holder.poll() is None
    for handle in gpu_slots._held[1:3]:  # the timing job ends
        handle.close()
    assert holder.stdout.readline().split()[0] == "1"
    holder.wait(timeout=30)


def test_gpu_count_from_the_driver_without_nvidia_smi(tmp_path):
    for bus in ("0000:18:00.0", "0000:2a:00.0"):
        (tmp_path / bus).mkdir()
    assert gpu_slots.visible_gpu_count(tmp_path) == 2


def test_memory_cap_is_the_share_of_slots_held(memory_caps):
    calls = memory_caps
    assert gpu_slots.limit_shared_gpu_memory("cuda", slots=2, log=lambda m: None) == 0.5
    assert gpu_slots.limit_shared_gpu_memory("cuda", slots=4, log=lambda m: None) is None
    assert calls == [(0.5, 0)]

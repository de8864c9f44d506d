"""The tiny workflow through a real one-node SLURM and the official executor plugin (opt-in).

Runs when SLURM can be started here (root, Debian's registry): `pytest -m slurm`. `.ci/run` runs it.
"""

import os
import shutil
import subprocess
import sys
import time

import pandas as pd
import pytest

from workflow_helpers import REPO, snakemake, tiny_workflow, write_config

pytestmark = pytest.mark.slurm

SLURM_FLAGS = [
    "--profile", str(REPO / "profiles" / "slurm"),
    # the local test cluster: one partition "main", no accounting, no GPUs
    "--default-resources", "slurm_partition=main", "mem_mb=1500", "runtime=20", "cpus_per_task=1",
    "--slurm-no-account", "--slurm-status-command", "squeue",
    "--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "2", "--jobs", "4",
]


@pytest.fixture(scope="module")
def slurm():
    if os.geteuid() != 0:
        pytest.skip("starting SLURM needs root")
    started = subprocess.run(["bash", str(REPO / "tests" / "slurm" / "start.sh")], capture_output=True, text=True)
    if started.returncode != 0:
        pytest.skip(f"no SLURM here: {started.stderr[-500:]}")
    yield
    subprocess.run(["bash", str(REPO / "tests" / "slurm" / "stop.sh")])


def run_snakemake(root, *extra, **kwargs):
    cmd = [sys.executable, "-m", "snakemake", "results/tables.md", "-s", str(REPO / "Snakefile"), "-d", str(root),
           "--configfile", str(root / "config.yaml"), *SLURM_FLAGS, *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, **kwargs)


def small_config(root):
    config = tiny_workflow(root)
    config["tables"] = {
        "table1": {"models": ["tiny-llama"], "methods": ["sparsegpt", "icp"], "sparsities": [0.5], "corpora": ["heldout"]},
    }
    config["engine"]["blocks_per_step"] = 3  # one job per run: fewer sbatch round trips
    config["cpu_threads"] = 1  # same float order inside SLURM jobs and local ones
    write_config(root, config)
    return config


def data_files(root, model: str, corpus: str) -> list[str]:
    """The block-0 inputs and held-out tokens of `model` under `root` (their keys hash the config
    as the Snakefile sees it: with the schema's defaults)."""
    import yaml

    from icp import experiments as X
    from icp import layout as L

    config = X.with_schema_defaults(yaml.safe_load((root / "config.yaml").read_text()),
                                    REPO / "workflow" / "schemas" / "config.schema.yaml")
    return [L.path("block0_inputs", model=model, key=X.calibration_key(config, model)),
            L.path("eval_tokens", model=model, corpus=corpus, key=X.eval_corpus_key(config, model, corpus))]


def test_workflow_through_slurm_survives_scancel_mid_run(slurm, tmp_path):
    """One SLURM session: the tiny workflow's pruning, assembly and evaluations run through
    profiles/slurm (sbatch job ids in the log; its data jobs ran locally first);
    its pruning job is cancelled after its first block; the retry (or a re-run) resumes at block 1 or 2,
    and the results equal an uninterrupted local run's."""
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    clean.mkdir()
    killed.mkdir()
    config = small_config(clean)
    config["tables"] = {"table1": {"models": ["tiny-llama"], "methods": ["icp"], "sparsities": [0.5], "corpora": ["heldout"]}}
    config["engine"].update(blocks_per_step="all")  # one job walks all blocks, saving each as it finishes
    config["methods"]["icp"]["compensation"]["epochs"] = 300  # seconds per block: time to cancel mid-job
    write_config(clean, config)
    for item in ("models", "text"):
        shutil.copytree(clean / item, killed / item)
    (killed / "config.yaml").write_text((clean / "config.yaml").read_text().replace(str(clean), str(killed)))
    snakemake(clean, "--cores", "2", "results/results.csv")  # the uninterrupted reference, run locally
    # the data jobs run here first: each SLURM wave costs ~45 s on 2 cores (a job's torch import,
    # the plugin's status polls), and the pruning, assembly and evaluations are what must go through it
    snakemake(killed, "--cores", "2", *data_files(killed, "tiny-llama", "heldout"))

    cmd = [sys.executable, "-m", "snakemake", "results/tables.md", "-s", str(REPO / "Snakefile"), "-d", str(killed),
           "--configfile", str(killed / "config.yaml"), *SLURM_FLAGS]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    cancelled = None
    deadline = time.time() + 600
    while time.time() < deadline and cancelled is None and proc.poll() is None:
        done_first = list(killed.glob("results/tiny-llama/runs/icp-*/steps/000.blocks.partial/block_0000.json"))
        queue = subprocess.run(["squeue", "-h", "-o", "%i %t %k"], capture_output=True, text=True).stdout.splitlines()
        running = [line.split()[0] for line in queue if " R rule_prune_step" in line]
        if done_first and running:
            cancelled = running[0]
            subprocess.run(["scancel", cancelled], check=True)
        time.sleep(0.2)
    first_log, _ = proc.communicate(timeout=900)
    assert cancelled, "no running pruning job to cancel:\n" + first_log[-3000:]
    job_ids = {line.split("SLURM jobid")[1].split()[0] for line in first_log.splitlines() if "SLURM jobid" in line}
    assert cancelled in job_ids and len(job_ids) > 1, "no sbatch job ids in the Snakemake log"
    rerun = run_snakemake(killed)  # nothing left to do when the profile's retry already finished the job
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    step_log = next(killed.glob("results/tiny-llama/logs/runs/icp-*/step-000.log")).read_text()
    assert "resuming at block 1" in step_log or "resuming at block 2" in step_log, step_log[-2000:]
    a = pd.read_csv(clean / "results" / "results.csv").sort_values(["run", "dataset"]).value.tolist()
    b = pd.read_csv(killed / "results" / "results.csv").sort_values(["run", "dataset"]).value.tolist()
    assert a == b
    assert set(pd.read_csv(killed / "results" / "results.csv").method) == {"dense", "icp"}
    assert "Table 1." in (killed / "results" / "tables.md").read_text()

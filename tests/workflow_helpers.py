"""A tiny workflow config on tiny random models and generated text, and a way to run Snakemake on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from tiny import generated_text, write_tiny_model

REPO = Path(__file__).resolve().parent.parent


def fake_wiki(path: Path, n: int = 80) -> Path:
    articles = {}
    for i in range(n):
        title = f"Article {i}"
        articles[title] = {"title": title, "extract": f"The city of {i} has a river. The king had a house there.",
                           "description": f"place number {i}", "topic": "Places"}
    path.write_text(json.dumps(articles))
    return path


def tiny_workflow(root: Path, blocks: int = 3) -> dict:
    """Write models (of `blocks` blocks), text and a config under `root`; return the config."""
    models = {fam: write_tiny_model(root / "models" / fam, fam, blocks=blocks) for fam in ("llama", "opt")}
    (root / "text").mkdir(exist_ok=True)
    (root / "text" / "calib.txt").write_text(generated_text(3000, seed=1))
    (root / "text" / "eval.txt").write_text(generated_text(1500, seed=2))
    wiki = fake_wiki(root / "text" / "wiki.json")
    config = {
        "device": "cpu",
        "models": {"tiny-llama": {"source": str(models["llama"]), "label": "Tiny Llama"},
                   "tiny-opt": {"source": str(models["opt"]), "label": "Tiny OPT"}},
        "corpora": {"calib": {"source": "files", "paths": [str(root / "text" / "calib.txt")]},
                    "heldout": {"source": "files", "paths": [str(root / "text" / "eval.txt")], "label": "Held-out"}},
        "calibration": {"corpus": "calib", "nsamples": 4, "seqlen": 32, "seed": 0, "sampler": "stream"},
        "engine": {"blocks_per_step": 2, "batch_size": 4, "track_error": True},
        "methods": {"magnitude": {}, "wanda": {}, "sparsegpt": {"blocksize": 128, "percdamp": 0.01},
                    "icp": {"inner": "sparsegpt", "alpha": 0.8, "beta": 0.9,
                            "compensation": {"epochs": 1, "lr": 1e-3, "batch_size": 1}}},
        "perplexity": {"seqlen": 32, "max_windows": 4},
        "zeroshot": {"offline": True, "batch_size": 8, "limit": None,
                     "tasks": {"wiki_description": {"metric": "acc", "label": "Description"}},
                     "local_tasks": {"names": ["wiki_description"], "items": 6, "seed": 0, "eval_percent": 50,
                                     "path": str(wiki)}},
        "tables": {
            "table1": {"models": ["tiny-llama"], "methods": ["magnitude", "wanda", "sparsegpt", "icp"],
                       "sparsities": [0.5], "corpora": ["heldout"]},
            "table2": {"models": ["tiny-llama"], "methods": ["sparsegpt", "icp"], "sparsities": [0.5]},
            "table4": {"models": ["tiny-opt"], "methods": ["sparsegpt", "icp"], "patterns": ["2:4"], "wbits": [16, 4],
                       "corpora": ["heldout"]},
            "table5": {"models": ["tiny-llama"], "methods": ["icp"], "patterns": ["2:4"]},
            "ic_perplexity": {"models": ["tiny-llama"], "methods": ["sparsegpt", "sparsegpt+ic"], "sparsities": [0.5],
                              "corpora": ["heldout"]},
        },
        "stages": {"ic": {"rank": 4, "epochs": 2, "init_std": 0.001}},
    }
    write_config(root, config)
    return config


def write_config(root: Path, config: dict, name: str = "config.yaml") -> Path:
    path = root / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snakemake_env() -> dict[str, str]:
    """The environment of a local Snakemake run in the tests: the repository on PYTHONPATH, and a
    stub `scontrol` first on PATH. Snakemake imports every installed executor plugin, and the SLURM
    plugin runs `scontrol show config` at import: where SLURM is installed but no controller runs
    (after the SLURM test stops its daemons) that call waits 9 s, in every Snakemake start."""
    stub_dir = Path(tempfile.gettempdir()) / "icp-tests-no-slurm"
    stub = stub_dir / "scontrol"
    if not stub.exists():
        stub_dir.mkdir(exist_ok=True)
        stub.write_text("#!/bin/sh\nexit 1\n")
        stub.chmod(0o755)
    return {**os.environ, "PYTHONPATH": str(REPO), "PATH": f"{stub_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


def snakemake(root: Path, *args: str, config: str = "config.yaml", check: bool = True, **popen) -> subprocess.CompletedProcess:
    # the config file goes last: Snakemake reads every word after --configfile as another config file
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(root), *args,
           "--configfile", str(root / config)]
    env = snakemake_env()
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, **popen)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


def planned_jobs(root: Path, config: str = "config.yaml") -> dict[str, int]:
    """Rule -> job count that `snakemake -n` would run."""
    out = snakemake(root, "results/tables.md", "-n", "--cores", "1", "--quiet", "rules", config=config).stdout
    counts = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("total", "job"):
            counts[parts[0]] = int(parts[1])
    return counts

"""profiles/gpu on a multi-GPU host: independent jobs run side by side, one per GPU, never two on one.

    python benchmarks/gpu_pinning_check.py --out benchmarks/results

Builds the tests' tiny workflow (random Llama, generated text) with ICP made slow enough to
overlap (many compensation epochs), runs it through `--profile profiles/gpu` with `gpu=<GPU count>`,
and samples `nvidia-smi` every 0.2 s. Fails unless every sample shows at most one of the
workflow's processes per GPU and some sample shows two GPUs busy at once.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from workflow_helpers import tiny_workflow, write_config  # noqa: E402


def gpu_processes() -> list[tuple[str, int]]:
    """(gpu uuid, pid) of every compute process."""
    out = subprocess.run(["nvidia-smi", "--query-compute-apps=gpu_uuid,pid", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout
    rows = [line.split(", ") for line in out.strip().splitlines() if line.strip()]
    return [(uuid, int(pid)) for uuid, pid in rows]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    gpus = len(subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip().splitlines())
    root = Path(tempfile.mkdtemp())
    config = tiny_workflow(root)
    config["device"] = "auto"
    config["engine"]["blocks_per_step"] = 3
    config["methods"]["icp"]["compensation"]["epochs"] = 400
    config["tables"] = {"table1": {"models": ["tiny-llama", "tiny-opt"], "methods": ["icp"], "sparsities": [0.5, 0.6],
                                   "corpora": ["heldout"]}}
    write_config(root, config)
    cmd = [sys.executable, "-m", "snakemake", "results/tables.md", "-s", str(REPO / "Snakefile"), "-d", str(root),
           "--profile", str(REPO / "profiles" / "gpu"), "--resources", f"gpu={gpus}", "--cores", "8",
           "--configfile", str(root / "config.yaml")]
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{os.environ.get('PYTHONPATH', '')}", "ICP_GPU_LOCK_DIR": str(root / "locks")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    samples, max_per_gpu, max_busy = 0, 0, 0
    while proc.poll() is None:
        procs = gpu_processes()
        per_gpu = Counter(uuid for uuid, _ in procs)
        if per_gpu:
            samples += 1
            max_per_gpu = max(max_per_gpu, max(per_gpu.values()))
            max_busy = max(max_busy, len(per_gpu))
        time.sleep(0.2)
    log = proc.stdout.read()
    pins = []
    for path in root.glob("results/*/logs/**/*.log"):
        pins += [line.split("pinned to ")[1].strip() for line in path.read_text().splitlines() if "pinned to" in line]
    summary = {"gpus": gpus, "returncode": proc.returncode, "samples_with_gpu_work": samples,
               "max_processes_on_one_gpu": max_per_gpu, "max_gpus_busy_at_once": max_busy,
               "pins": dict(Counter(pins)), "gpu_names": subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout}
    print(json.dumps(summary, indent=1))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "gpu_pinning_check.json").write_text(json.dumps(summary, indent=1))
    if proc.returncode != 0:
        print(log[-5000:])
    assert proc.returncode == 0, "workflow failed"
    assert max_per_gpu <= 1, "two jobs shared a GPU"
    assert gpus < 2 or max_busy >= 2, "jobs never ran side by side"
    print("gpu pinning check passed")


if __name__ == "__main__":
    main()

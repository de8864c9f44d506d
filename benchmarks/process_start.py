"""How long a workflow job's process takes to start, on a warm machine (files in the page cache).

Three numbers, each the median of `--repeats` fresh interpreters after one warm-up:
- `first_log_s`: the process's age at its first log line, as a `prune-step` logs it (from /proc:
  exec, the CLI's and the engine's imports, the GPU count, the device check); that step then stops
  (its model directory is missing);
- `failed_step_s`: the same process from exec to exit, timed from outside;
- `model_imports_s`: a fresh interpreter importing what a prune step imports before its first block
  (the engine and the OPT and Llama decoder layers from transformers).

    python benchmarks/process_start.py --out benchmarks/results --tag h100
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SPEC = {"method": "sparsegpt", "pattern": "unstructured", "sparsity": 0.5, "wbits": 16}
MODEL_IMPORTS = ("import icp.runs; import transformers.models.opt.modeling_opt; "
                 "import transformers.models.llama.modeling_llama")


def wall(cmd: list[str], expect_fail: bool = False) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - started
    if (done.returncode != 0) != expect_fail:
        raise RuntimeError(f"{cmd} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=None)
    parser.add_argument("--tag", default="local")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        step = [sys.executable, "-m", "icp.cli", "prune-step", "--model-dir", f"{tmp}/missing",
                "--spec", json.dumps(SPEC), "--first", "0", "--last", "1", "--carry-in", f"{tmp}/carry.pt",
                "--blocks", f"{tmp}/blocks", "--record", f"{tmp}/r.json", "--carry-out", f"{tmp}/c.pt",
                "--device", args.device]
        imports = [sys.executable, "-c", MODEL_IMPORTS]
        row = {}
        for name, cmd, fails in (("failed_step_s", step, True), ("model_imports_s", imports, False)):
            wall(cmd, fails)  # warm-up: the page cache, .pyc files
            runs = [wall(cmd, fails) for _ in range(args.repeats)]
            times = [seconds for seconds, _ in runs]
            row[name] = round(statistics.median(times), 3)
            row[f"{name}_all"] = [round(t, 3) for t in times]
            if name == "failed_step_s":
                ages = [float(re.search(r"process started ([\d.]+)s ago", out).group(1)) for _, out in runs]
                row["first_log_s"] = round(statistics.median(ages), 2)
                row["first_log_s_all"] = ages
    print(json.dumps(row, indent=1))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / f"process_start_{args.tag}.json").write_text(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()

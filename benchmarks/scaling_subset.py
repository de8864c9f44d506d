"""Write a slice of config/offline-gpu.yaml for timing one GPU against two on the same machine
inside the device's 10-minute calls: Table 1 at 50-90 % for all four methods (20 prune jobs and 21
perplexity jobs over the whole held-out text), no zero-shot, ablation or inference jobs.

    python benchmarks/scaling_subset.py /tmp/scaling.yaml
    CONFIG=/tmp/scaling.yaml bash benchmarks/offline_gpu_run.sh one|two
"""

import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent

config = yaml.safe_load((REPO / "config" / "offline-gpu.yaml").read_text())
table1 = {**config["tables"]["table1"], "sparsities": [0.5, 0.6, 0.7, 0.8, 0.9]}
config["tables"] = {"table1": table1}
for key in ("ablations", "inference"):
    config.pop(key, None)
Path(sys.argv[1]).write_text(yaml.safe_dump(config, sort_keys=False))

"""Write a slice of config/offline-gpu.yaml: the same models, data and method settings (so every
run keeps the hash it has in the whole grid), fewer tables, for device calls of 10 minutes.

    python benchmarks/config_slice.py scaling /tmp/slice.yaml       # Table 1 at 50-90 %, no zero-shot
    python benchmarks/config_slice.py families+ic /tmp/slice.yaml   # slices join with '+'
    CONFIG=/tmp/slice.yaml bash benchmarks/offline_gpu_run.sh one

Slices:
- scaling: Table 1 at 50-90 % for all four methods (20 prune jobs and 21 perplexity jobs over the
  whole held-out text); for timing one GPU against two.
- families: Gemma-3-270M, every method at 50 %, 70 % and 2:4, perplexity and zero-shot (issue #29).
- ic: SmolLM2-135M, every method with and without input compensation at 70 %, perplexity and
  zero-shot (the IC paper's Tables 3 and 4; issue #28).
No slice has ablations or the 2:4 inference table.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
METHODS = ["magnitude", "wanda", "sparsegpt", "icp"]


def slice_tables(name: str, tables: dict) -> dict:
    if name == "scaling":
        return {"table1": {**tables["table1"], "sparsities": [0.5, 0.6, 0.7, 0.8, 0.9]}}
    if name == "families":
        gemma = {"models": ["gemma3-270m"], "methods": METHODS}
        return {"table1": {**tables["table1"], **gemma, "sparsities": [0.5, 0.7]},
                "table2": {**tables["table2"], **gemma, "sparsities": [0.5, 0.7]},
                "table4": {**tables["table4"], **gemma, "patterns": ["2:4"], "wbits": [16]},
                "table5": {**tables["table5"], **gemma, "patterns": ["2:4"], "wbits": [16]}}
    if name == "ic":
        return {"ic_perplexity": {**tables["ic_perplexity"], "sparsities": [0.7]},
                "ic_zeroshot": {**tables["ic_zeroshot"], "sparsities": [0.7]}}
    raise SystemExit(f"unknown slice {name!r}; known: scaling, families, ic")


def main() -> None:
    names, out = sys.argv[1].split("+"), Path(sys.argv[2])
    config = yaml.safe_load((REPO / "config" / "offline-gpu.yaml").read_text())
    tables = {}
    for name in names:
        tables.update(slice_tables(name, config["tables"]))
    config["tables"] = tables
    for key in ("ablations", "inference"):
        config.pop(key, None)
    out.write_text(yaml.safe_dump(config, sort_keys=False))


if __name__ == "__main__":
    main()

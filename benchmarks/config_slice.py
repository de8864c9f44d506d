"""Write a slice of config/offline-gpu.yaml: the same models, data and method settings (so every
run keeps the hash it has in the whole grid), fewer tables, for device calls of 10 minutes.

    python benchmarks/config_slice.py scaling /tmp/slice.yaml       # Table 1 at 50-90 %, no zero-shot
    python benchmarks/config_slice.py families+ic /tmp/slice.yaml   # slices join with '+'
    python benchmarks/config_slice.py grid-1 /tmp/part.yaml         # a third of the whole grid (below)
    CONFIG=/tmp/slice.yaml bash benchmarks/offline_gpu_run.sh one

Slices:
- scaling: Table 1 at 50-90 % for all four methods (20 prune jobs and 21 perplexity jobs over the
  whole held-out text); for timing one GPU against two.
- families: Gemma-3-270M, every method at 50 %, 70 % and 2:4, perplexity and zero-shot (issue #29).
- ic: SmolLM2-135M, every method with and without input compensation at 70 %, perplexity and
  zero-shot (the IC paper's Tables 3 and 4; issue #28).
These have no ablations and no 2:4 inference table.

The grid's parts (`grid-1`, `grid-2`, `grid-3`) split the whole config by run, for a grid too long
for one session of device time: every pruned run of the grid, with all of its evaluations, is in
exactly one part (`tests/test_benchmark_scripts.py` checks it), so the parts' runs together are the
grid's, none twice; only the dense model's evaluations repeat in each part a model is in.
- grid-1: SmolLM2-135M at 10-40, 60, 80 and 90 % (Table 1) and at 2:4 and 4:8 x 16/4/3 bits
  (Tables 4 and 5), and the 2:4 inference table. Its halves, for a session with less device time:
  grid-1a (the unstructured runs: Table 1, perplexity only) and grid-1b (the N:M runs, Tables 4
  and 5, and the inference table).
- grid-2: SmolLM2-135M at 50 and 70 % (Tables 1 and 2), input compensation, the ablations (at 70 %).
- grid-3: Gemma-3-270M, all of its tables.
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
    raise SystemExit(f"unknown slice {name!r}; known: scaling, families, ic, {', '.join(GRID_PARTS)}")


GRID_PARTS = ("grid-1", "grid-2", "grid-3")
# grid-1 cut in two, for a session with less device time; these four also split the grid by run
GRID_HALVES = {"grid-1a": "grid-1", "grid-1b": "grid-1"}
# grid-2's sparsities: where Table 2, input compensation and the ablations (at 70 %) share runs
SHARED_SPARSITIES = (0.5, 0.7)


def grid_part(name: str, config: dict) -> dict:
    """The whole config cut down to one part of the grid (module docstring); raises on a config
    whose tables the parts were not written for."""
    tables = config["tables"]
    smol, gemma = "smollm2-135m", "gemma3-270m"
    for key, table in tables.items():
        if sorted(table["models"]) not in ([smol], sorted([smol, gemma])):
            raise SystemExit(f"{key}: models {table['models']}; the grid parts know SmolLM2-135M and Gemma-3-270M")
    if config.get("ablations", {}).get("model", smol) != smol or any(
            s not in SHARED_SPARSITIES for s in config.get("ablations", {}).get("sparsities", [])):
        raise SystemExit("ablations: the grid parts put them on SmolLM2-135M at 50 or 70 %")
    if name in GRID_HALVES:
        part = grid_part(GRID_HALVES[name], config)
        unstructured = name == "grid-1a"
        part["tables"] = {key: t for key, t in part["tables"].items() if ("sparsities" in t) == unstructured}
        if unstructured:
            part.pop("inference", None)
        return part
    part = dict(config)
    if name == "grid-3":
        part["tables"] = {key: {**t, "models": [gemma]} for key, t in tables.items() if gemma in t["models"]}
        for key in ("ablations", "inference"):
            part.pop(key, None)
    elif name in ("grid-1", "grid-2"):
        shared = name == "grid-2"
        cut = {}
        for key, table in tables.items():
            table = {**table, "models": [smol]}
            if "sparsities" in table:
                table["sparsities"] = [s for s in table["sparsities"] if (s in SHARED_SPARSITIES) == shared]
                if table["sparsities"]:
                    cut[key] = table
            elif not shared:  # N:M tables (patterns): grid-1
                cut[key] = table
        part["tables"] = cut
        part.pop("inference" if shared else "ablations", None)
    else:
        raise SystemExit(f"unknown grid part {name!r}; known: {', '.join((*GRID_PARTS, *GRID_HALVES))}")
    return part


def slice_config(names: list[str], config: dict) -> dict:
    """`config` cut to the named slices (joined: their tables merged)."""
    if any(name in GRID_PARTS or name in GRID_HALVES for name in names):
        if len(names) != 1:
            raise SystemExit("a grid part is used alone")
        return grid_part(names[0], config)
    tables = {}
    for name in names:
        tables.update(slice_tables(name, config["tables"]))
    config = {**config, "tables": tables}
    for key in ("ablations", "inference"):
        config.pop(key, None)
    return config


def main() -> None:
    names, out = sys.argv[1].split("+"), Path(sys.argv[2])
    config = yaml.safe_load((REPO / "config" / "offline-gpu.yaml").read_text())
    out.write_text(yaml.safe_dump(slice_config(names, config), sort_keys=False))


if __name__ == "__main__":
    main()

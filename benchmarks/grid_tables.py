"""The whole config's tables from a grid run in parts (benchmarks/config_slice.py grid-1 ... grid-3):
results.csv, plots/ and tables.md, rendered as the workflow's report rules render them, from a
results tree that holds every part's evaluation files and run records. Unpack each part's
offline-gpu-one.tgz (benchmarks/offline_gpu_run.sh) into a folder of its own, keep its
segments.txt (the part's wall time), and copy the parts' results/ folders into one.

    python benchmarks/grid_tables.py --config config/offline-gpu.yaml --results /tmp/grid/results \\
        --out results/offline-gpu-grid

Stops, naming them, if any evaluation the config's tables need or any run record is missing: a
part not run, or not unpacked.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import pandas as pd
import yaml

from icp import experiments as X
from icp.report.plots import draw_all
from icp.report.tables import collect_results, render_tables


SCHEMA = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"


def render(config: dict, results: Path, out: Path) -> Path:
    """Write results.csv, plots/ and tables.md under `out`; returns tables.md's path. Paths in the
    CSV's `source` column read `results/...`, as in a workflow run's."""
    config = X.with_schema_defaults(config, SCHEMA)
    out = out.resolve()
    with contextlib.chdir(results.resolve().parent):  # the layout's paths are relative to the results tree's parent
        evaluations = X.evaluation_targets(config, root=results.resolve().name)
        records = X.run_records(config, root=results.resolve().name)
        missing = [path for path in evaluations + records if not Path(path).exists()]
        if missing:
            shown = "\n  ".join(missing[:10])
            raise SystemExit(f"{len(missing)} of the config's evaluation files and run records are not under "
                             f"{results}:\n  {shown}{chr(10) + '  ...' if len(missing) > 10 else ''}")
        out.mkdir(parents=True, exist_ok=True)
        collect_results(evaluations).to_csv(out / "results.csv", index=False)
        frame = pd.read_csv(out / "results.csv")
        plots = draw_all(frame, records, out / "plots", config)
    tables = out / "tables.md"
    tables.write_text(render_tables(frame, config, plots=[str(p) for p in plots]))
    return tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="the whole config the parts were cut from")
    parser.add_argument("--results", type=Path, required=True, help="the results tree holding every part's outputs")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    tables = render(yaml.safe_load(args.config.read_text()), args.results, args.out)
    print(f"{tables}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""The `ablations:` sweeps as numbers, plots and a section of tables.md (the paper's Figure 4).

Each sweep point is a run of the workflow (`icp.experiments.ablation_points`); its perplexity on
the ablation corpus comes from results.csv, by run name, like every other number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from .. import experiments as X
from .format import label as config_label, markdown, method_label

SERIES_COLUMNS = ["parameter", "value", "method", "sparsity", "table_setting", "run", "perplexity"]


def ablation_series(frame: pd.DataFrame, config: dict[str, Any]) -> pd.DataFrame:
    """One row per sweep point: the swept value and the run's perplexity (NaN if not evaluated)."""
    if not config.get("ablations"):
        return pd.DataFrame(columns=SERIES_COLUMNS)
    corpus = X.ablation_corpus(config)
    ppl = frame[(frame["evaluation"] == "perplexity") & (frame["dataset"] == corpus)]
    by_run = dict(zip(ppl["run"], ppl["value"]))
    rows = [{"parameter": p.parameter, "value": p.value, "method": p.method, "sparsity": p.sparsity,
             "table_setting": p.table_setting, "run": p.experiment.run,
             "perplexity": by_run.get(p.experiment.run, float("nan"))}
            for p in X.ablation_points(config)]
    return pd.DataFrame(rows, columns=SERIES_COLUMNS)


def _dense_perplexity(frame: pd.DataFrame, config: dict[str, Any]) -> float | None:
    corpus, model = X.ablation_corpus(config), config["ablations"]["model"]
    dense = frame[(frame["evaluation"] == "perplexity") & (frame["dataset"] == corpus)
                  & (frame["model"] == model) & (frame["method"] == "dense")]
    return None if dense.empty else float(dense["value"].iloc[0])


def _line_label(method: str, sparsity: float) -> str:
    return f"{method_label(method)} {round(100 * sparsity)}%"


def ablation_section(frame: pd.DataFrame, config: dict[str, Any]) -> str:
    """`## Ablations`: one table per swept parameter, rows = values, columns = method x sparsity."""
    series = ablation_series(frame, config)
    if series.empty:
        return ""
    ablations = config["ablations"]
    corpus = X.ablation_corpus(config)
    dense = _dense_perplexity(frame, config)
    parts = ["## Ablations (the paper's Figure 4)\n",
             f"Perplexity on {config_label(config, 'corpora', corpus)} of {config_label(config, 'models', ablations['model'])}, "
             "one parameter changed at a time, everything else as in the tables. `*`: the tables' own setting "
             "(the same run as in the tables)." + (f" Dense: {dense:.2f}." if dense is not None else "") + "\n"]
    for parameter, rows in series.groupby("parameter", sort=False):
        lines = list(dict.fromkeys(zip(rows["method"], rows["sparsity"])))
        header = [X.SWEPT_PARAMETERS[parameter].label] + [_line_label(m, s) for m, s in lines]
        body = []
        for value, at_value in rows.groupby("value", sort=True):
            cells = []
            for method, sparsity in lines:
                hit = at_value[(at_value["method"] == method) & (at_value["sparsity"] == sparsity)]
                ppl = float(hit["perplexity"].iloc[0]) if not hit.empty else float("nan")
                cells.append("–" if ppl != ppl else f"{ppl:.2f}")
            mark = " *" if at_value["table_setting"].any() else ""
            body.append([f"{value:g}{mark}"] + cells)
        parts.append(f"### {X.SWEPT_PARAMETERS[parameter].label}\n\n" + markdown(header, body) + "\n")
        parts.append(f"![ablation_{parameter}](plots/ablation_{parameter}.png)\n")
    return "\n".join(parts)


def ablation_plots(frame: pd.DataFrame, config: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """`ablation_<parameter>.{png,svg,csv}`: perplexity against the value, one line per method and
    sparsity, the tables' setting marked by a dotted vertical line."""
    from .plots import _save, plt

    series = ablation_series(frame, config)
    paths: list[Path] = []
    dense = _dense_perplexity(frame, config) if not series.empty else None
    for parameter, rows in series.groupby("parameter", sort=False):
        fig, ax = plt.subplots(figsize=(5, 4))
        for (method, sparsity), line in rows.groupby(["method", "sparsity"], sort=False):
            line = line.sort_values("value")
            ax.plot(line["value"], line["perplexity"], marker="o", label=_line_label(method, sparsity))
        ax.axvline(float(X.table_setting(config, parameter, config["ablations"]["model"])), color="black", linestyle=":", label="tables' setting")
        if dense is not None:
            ax.axhline(dense, color="gray", linestyle="--", label="Dense")
        if parameter == "lr" or (parameter == "nsamples" and rows["value"].max() / max(rows["value"].min(), 1) >= 8):
            ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(X.SWEPT_PARAMETERS[parameter].label)
        ax.set_ylabel("perplexity")
        ax.legend()
        paths += _save(fig, rows, Path(out_dir), f"ablation_{parameter}")
    return paths


def ablation_plot_names(config: dict[str, Any]) -> list[str]:
    """The plot names the workflow expects for this config's sweeps."""
    return [f"ablation_{p}" for p in ((config.get("ablations") or {}).get("sweeps") or {})]

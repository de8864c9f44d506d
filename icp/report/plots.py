"""Figures from results.csv and the runs' records: perplexity and IoU curves, zero-shot bars,
the per-block output error (the paper's Figure 1 "error snowball"), and cost per method.

Every figure is written as PNG and SVG, with the exact series it draws beside it as CSV.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .format import method_label, ordered_methods  # noqa: E402



def _save(fig, series: pd.DataFrame, out_dir: Path, name: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.svg", out_dir / f"{name}.csv"]
    fig.savefig(paths[0], dpi=120, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    series.to_csv(paths[2], index=False)
    plt.close(fig)
    return paths


def perplexity_curves(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Sparsity -> perplexity, one panel per (model, corpus), one line per method, log-scale y."""
    ppl = frame[(frame.evaluation == "perplexity") & (frame.pattern == "unstructured") & (frame.wbits == 16)]
    series = ppl[["model", "dataset", "method", "sparsity", "value"]].sort_values(["model", "dataset", "method", "sparsity"])
    panels = list(series.groupby(["model", "dataset"]))
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5 * max(1, len(panels)), 4), squeeze=False)
    for ax, ((model, corpus), data) in zip(axes[0], panels):
        for method in ordered_methods(data.method):
            d = data[data.method == method]
            ax.plot(100 * d.sparsity, d.value, marker="o", label=method_label(method))
        dense = frame[(frame.model == model) & (frame.dataset == corpus) & (frame.method == "dense")]
        if not dense.empty:
            ax.axhline(float(dense.value.iloc[0]), color="gray", linestyle="--", label="Dense")
        ax.set_yscale("log")
        ax.set_xlabel("sparsity (%)")
        ax.set_ylabel("perplexity")
        ax.set_title(f"{model} — {corpus}")
        ax.legend()
    return _save(fig, series, out_dir, "perplexity_vs_sparsity")


def zeroshot_bars(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Mean zero-shot accuracy per method, grouped by setting (sparsity or N:M + bits)."""
    zs = frame[(frame.evaluation == "zeroshot") & (frame.dataset == "mean")].copy()
    zs["setting"] = [
        "dense" if p == "dense" else (f"{round(100 * s)}%" if p == "unstructured" else p) + ("" if w >= 16 else f"+int{w}")
        for p, s, w in zip(zs.pattern, zs.sparsity, zs.wbits)
    ]
    series = zs[["model", "setting", "method", "value"]].sort_values(["model", "setting", "method"])
    fig, ax = plt.subplots(figsize=(8, 4))
    settings = [s for s in dict.fromkeys(series.setting) if s != "dense"]
    methods = ordered_methods(series.method)
    width = 0.8 / max(1, len(methods))
    for k, method in enumerate(methods):
        d = series[series.method == method].set_index("setting")
        ax.bar([i + k * width for i in range(len(settings))], [100 * d.value.get(s, float("nan")) for s in settings],
               width, label=method_label(method))
    dense = series[series.method == "dense"]
    if not dense.empty:
        ax.axhline(100 * float(dense.value.iloc[0]), color="gray", linestyle="--", label="Dense")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(settings))], settings)
    ax.set_ylabel("mean zero-shot accuracy (%)")
    ax.legend()
    return _save(fig, series, out_dir, "zeroshot_mean")


def block_error_curves(records: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """The "error snowball": relative MSE of each block's output against the dense model's."""
    rows = []
    for rec in records:
        spec = rec["spec"]
        label = f"{round(100 * spec['sparsity'])}%" if spec["pattern"] == "unstructured" else spec["pattern"]
        for block in rec["blocks"]:
            if "output_rel_mse" in block:
                rows.append({"model": rec["model"], "setting": label, "method": spec["method"],
                             "block": block["block"], "rel_mse": block["output_rel_mse"]})
    series = pd.DataFrame(rows, columns=["model", "setting", "method", "block", "rel_mse"])
    panels = list(series.groupby(["model", "setting"]))
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5 * max(1, len(panels)), 4), squeeze=False)
    for ax, ((model, setting), data) in zip(axes[0], panels):
        for method in ordered_methods(data.method):
            d = data[data.method == method].sort_values("block")
            ax.plot(d.block, d.rel_mse, marker=".", label=method_label(method))
        ax.set_yscale("log")
        ax.set_xlabel("block")
        ax.set_ylabel("relative output MSE vs dense")
        ax.set_title(f"{model} — {setting}")
        ax.legend()
    return _save(fig, series, out_dir, "block_error")


def cost_bars(records: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Pruning wall time (and peak accelerator memory, when on a GPU) per method."""
    series = pd.DataFrame([
        {"model": r["model"], "method": r["spec"]["method"], "run": r["run"], "seconds": r["prune_seconds"],
         "peak_gpu_gib": r.get("peak_gpu_gib", 0.0), "device": r.get("device") or "not recorded"} for r in records
    ], columns=["model", "method", "run", "seconds", "peak_gpu_gib", "device"])
    mean = series.groupby("method", as_index=False)[["seconds", "peak_gpu_gib"]].mean()
    mean = mean.set_index("method").reindex(ordered_methods(mean.method)).reset_index()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    labels = [method_label(m) for m in mean.method]
    axes[0].bar(labels, mean.seconds)
    axes[0].set_ylabel("pruning time per run (s)")
    axes[1].bar(labels, mean.peak_gpu_gib)
    axes[1].set_ylabel("peak accelerator memory (GiB)")
    return _save(fig, series, out_dir, "cost")


def load_records(paths: list[str]) -> list[dict[str, Any]]:
    records = []
    for path in paths:
        rec = json.loads(Path(path).read_text())
        if rec.get("id"):
            rec["model"], rec["run"] = rec["id"]["model"], rec["id"]["run"]
        else:  # written before records carried their identity: results/<model>/runs/<run>/model/pruning.json
            parts = Path(path).parts
            rec["model"], rec["run"] = parts[-5], parts[-3]
        if not rec.get("stages"):  # a staged run repeats its pruning run's blocks: counted once, there
            records.append(rec)
    return records


def draw_all(frame: pd.DataFrame, record_paths: list[str], out_dir: str | Path,
             config: dict[str, Any] | None = None) -> list[Path]:
    from ..experiments import table_runs
    from .ablations import ablation_plots

    out = Path(out_dir)
    records = load_records(record_paths)
    swept = ablation_plots(frame, config, out) if config else []
    if config:  # the tables' figures show the tables' runs, not the ablation sweeps'
        runs = table_runs(config)
        frame = frame[frame["run"].isin(runs)]
        records = [r for r in records if r["run"] in runs]
    return (perplexity_curves(frame, out) + zeroshot_bars(frame, out)
            + block_error_curves(records, out) + cost_bars(records, out) + swept)

"""results.csv and the six tables of the ICP paper's README, from the evaluation JSON files.

Only cells the config asked for appear; the best value of each column (within a group of rows
that compete) is bold: lowest perplexity, highest accuracy / IoU.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

TITLES = {
    "table1": "Table 1. Perplexity at unstructured sparsity",
    "table2": "Table 2. Zero-shot accuracy (%) at unstructured sparsity",
    "table3": "Table 3. SAM single-point IoU at unstructured sparsity",
    "table4": "Table 4. Perplexity under N:M sparsity, alone and with weight quantization",
    "table5": "Table 5. Zero-shot accuracy (%) under N:M sparsity, alone and with weight quantization",
    "table6": "Table 6. SAM single-point IoU under N:M sparsity, alone and with weight quantization",
}
METHOD_NAMES = {"dense": "Dense", "magnitude": "Magnitude", "wanda": "Wanda", "sparsegpt": "SparseGPT", "icp": "ICP"}
COLUMNS = ["model", "run", "method", "pattern", "sparsity", "wbits", "evaluation", "dataset", "metric", "value",
           "count", "subset", "run_hash", "config_hash", "versions", "machine", "source"]


def collect_results(paths: list[str]) -> pd.DataFrame:
    """One row per number: perplexities as they are, zero-shot as one row per task plus the mean."""
    rows: list[dict[str, Any]] = []
    for path in paths:
        data = json.loads(Path(path).read_text())
        base = {k: data.get(k) for k in ("model", "run", "method", "pattern", "sparsity", "wbits", "run_hash", "config_hash")}
        base["versions"] = json.dumps(data.get("versions", {}), sort_keys=True)
        base["machine"] = json.dumps(data.get("machine", {}), sort_keys=True)
        base["source"] = str(path)
        if data["metric"] == "perplexity":
            subset = data["windows"] * data["seqlen"] < data["text_tokens"] - data["seqlen"]
            rows.append({**base, "evaluation": "perplexity", "dataset": data["corpus"], "metric": "perplexity",
                         "value": data["value"], "count": data["windows"], "subset": subset})
        elif data["metric"] == "zeroshot":
            for task, r in data["tasks"].items():
                rows.append({**base, "evaluation": "zeroshot", "dataset": task, "metric": r["metric"],
                             "value": r["value"], "count": r["n"], "subset": bool(data.get("limit"))})
            rows.append({**base, "evaluation": "zeroshot", "dataset": "mean", "metric": "mean",
                         "value": data["mean"], "count": None, "subset": bool(data.get("limit"))})
        elif data["metric"] == "iou":
            rows.append({**base, "evaluation": "iou", "dataset": data["dataset"], "metric": "iou",
                         "value": data["value"], "count": data["instances"], "subset": True})
    return pd.DataFrame(rows, columns=COLUMNS)


def _setting(pattern: str, sparsity: float | None, wbits: int) -> str:
    if pattern == "dense":
        return "dense"
    name = f"{round(100 * sparsity)}%" if pattern == "unstructured" else pattern
    return name if wbits >= 16 else f"{name}+int{wbits}"


def _fmt(value: float, bold: bool, percent: bool) -> str:
    text = f"{100 * value:.2f}" if percent else f"{value:.2f}"
    return f"**{text}**" if bold else text


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _lookup(frame: pd.DataFrame, **where: Any) -> float | None:
    sel = frame
    for key, value in where.items():
        if value is None:
            sel = sel[sel[key].isna()]
        else:
            sel = sel[sel[key] == value]
    return None if sel.empty else float(sel["value"].iloc[0])


def _grid(frame: pd.DataFrame, groups: list[tuple[str, list[tuple[str, dict[str, Any]]]]],
          columns: list[tuple[str, dict[str, Any]]], higher_better: bool, percent: bool,
          first_header: list[str]) -> str:
    """Rows grouped (best per column is judged inside each group); each cell = one lookup."""
    out_rows = []
    for group_name, members in groups:
        values = [[_lookup(frame, **{**row_where, **col_where}) for _, col_where in columns] for _, row_where in members]
        best = []
        for j in range(len(columns)):
            col = [v[j] for v, (label, _) in zip(values, members) if v[j] is not None and label != "Dense"]
            best.append((max(col) if higher_better else min(col)) if col else None)
        for (label, _), vals in zip(members, values):
            cells = ["–" if v is None else _fmt(v, label != "Dense" and v == best[j], percent) for j, v in enumerate(vals)]
            out_rows.append(([group_name] if group_name is not None else []) + [label] + cells)
    return _markdown(first_header + [c for c, _ in columns], out_rows)


def _label(config: dict[str, Any], kind: str, name: str) -> str:
    return (config.get(kind, {}).get(name) or {}).get("label", name)


def _row_groups(t: dict[str, Any], by_sparsity: bool, with_dense: bool = True) -> list[tuple[str, list[tuple[str, dict[str, Any]]]]]:
    """Table rows: the dense model, then the methods grouped by sparsity or by N:M (+ int) setting."""
    groups = [("", [("Dense", {"method": "dense"})])] if with_dense else []
    if by_sparsity:
        for s in t["sparsities"]:
            members = [(METHOD_NAMES.get(m, m), {"method": m, "pattern": "unstructured", "sparsity": float(s), "wbits": 16}) for m in t["methods"]]
            groups.append((f"{round(100 * s)}%", members))
    else:
        for pattern in t["patterns"]:
            for bits in t.get("wbits", [16]):
                members = [(METHOD_NAMES.get(m, m), {"method": m, "pattern": pattern, "wbits": int(bits)}) for m in t["methods"]]
                groups.append((_setting(pattern, None, int(bits)), members))
    return groups


def _table_1_or_4(frame: pd.DataFrame, config: dict[str, Any], key: str) -> list[str]:
    t = config["tables"][key]
    blocks = []
    ppl = frame[frame["evaluation"] == "perplexity"]
    for model in t["models"]:
        mf = ppl[ppl["model"] == model]
        title = f"**{_label(config, 'models', model)}**"
        if key == "table1":
            corpus = t["corpora"][0]
            cf = mf[mf["dataset"] == corpus]
            columns = [(f"{round(100 * s)}%", {"sparsity": float(s)}) for s in t["sparsities"]]
            members = [(METHOD_NAMES.get(m, m), {"method": m, "pattern": "unstructured", "wbits": 16}) for m in t["methods"]]
            dense = _lookup(cf, method="dense")
            grid = _grid(cf, [(None, members)], columns, False, False, ["Method"])
            dense_line = f"Dense: {dense:.2f}" if dense is not None else ""
            blocks.append(f"{title} — perplexity on {_label(config, 'corpora', corpus)}. {dense_line}\n\n{grid}")
        else:
            columns = [(_label(config, "corpora", c), {"dataset": c}) for c in t["corpora"]]
            groups = _row_groups(t, by_sparsity=False)
            blocks.append(f"{title}\n\n" + _grid(mf, groups, columns, False, False, ["Setting", "Method"]))
    return blocks


def _table_2_or_5(frame: pd.DataFrame, config: dict[str, Any], key: str) -> list[str]:
    t = config["tables"][key]
    zs = frame[frame["evaluation"] == "zeroshot"]
    blocks = []
    for model in t["models"]:
        mf = zs[zs["model"] == model]
        tasks = [d for d in dict.fromkeys(mf["dataset"]) if d != "mean"]
        task_labels = config.get("zeroshot", {}).get("tasks", {})
        columns = [((task_labels.get(d) or {}).get("label", d), {"dataset": d}) for d in tasks] + [("Mean", {"dataset": "mean"})]
        groups = _row_groups(t, by_sparsity=key == "table2")
        header = ["Sparsity" if key == "table2" else "Setting", "Method"]
        blocks.append(f"**{_label(config, 'models', model)}**\n\n" + _grid(mf, groups, columns, True, True, header))
    return blocks


def _table_3_or_6(frame: pd.DataFrame, config: dict[str, Any], key: str) -> list[str]:
    """Rows: methods grouped by sparsity (3) or setting (6); columns: each model on each image set."""
    t = config["tables"][key]
    iou = frame[frame["evaluation"] == "iou"]
    columns = [(f"{_label(config, 'models', m)} {_label(config, 'image_sets', d)}", {"model": m, "dataset": d})
               for m in t["models"] for d in t["datasets"]]
    groups = _row_groups(t, by_sparsity=key == "table3", with_dense=t.get("dense", True))
    header = ["Sparsity" if key == "table3" else "Setting", "Method"]
    return ["Single-point mIoU (%).\n\n" + _grid(iou, groups, columns, True, True, header)]


def render_tables(frame: pd.DataFrame, config: dict[str, Any], plots: list[str] | None = None) -> str:
    """`results/tables.md`: every table the config asks for, with its notes; others say why they are absent."""
    parts = ["# Results\n", "Recomputed by this pipeline. Every number is also in `results/results.csv`, with its provenance.\n"]
    if config.get("notes"):
        parts.append(config["notes"].strip() + "\n")
    for key in ("table1", "table2", "table3", "table4", "table5", "table6"):
        t = config["tables"].get(key)
        parts.append(f"## {TITLES[key]}\n")
        if not t:
            reason = config.get("table_notes", {}).get(key, "not asked for by this config")
            parts.append(f"_Omitted: {reason}_\n")
            continue
        if t.get("note"):
            parts.append(f"_{t['note'].strip()}_\n")
        if key in ("table1", "table4"):
            blocks = _table_1_or_4(frame, config, key)
        elif key in ("table2", "table5"):
            blocks = _table_2_or_5(frame, config, key)
        else:
            blocks = _table_3_or_6(frame, config, key)
        parts.extend(b + "\n" for b in blocks)
        subset = frame[(frame["subset"] == True)]  # noqa: E712
        if key in ("table1", "table4") and not subset[subset["evaluation"] == "perplexity"].empty:
            counts = sorted(set(int(c) for c in subset[subset["evaluation"] == "perplexity"]["count"]))
            parts.append(f"_Perplexity over the first {', '.join(map(str, counts))} windows of each text, not the whole text._\n")
        if key in ("table2", "table5") and not subset[subset["evaluation"] == "zeroshot"].empty:
            parts.append("_Zero-shot accuracy on a subset of each task (`zeroshot.limit`)._\n")
        if key in ("table3", "table6"):
            counts = frame[frame["evaluation"] == "iou"].groupby("dataset")["count"].max()
            if not counts.empty:
                sizes = ", ".join(f"{_label(config, 'image_sets', d)}: {int(c)}" for d, c in counts.items())
                parts.append(f"_Instances per evaluation ({sizes}); one point per instance (see icp/evaluate/sam_iou.py)._\n")
    images = [p for p in (plots or []) if p.endswith(".png")]
    if images:
        parts.append("## Plots\n")
        parts.extend(f"![{Path(p).stem}](plots/{Path(p).name})\n" for p in images)
    return "\n".join(parts)

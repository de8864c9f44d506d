"""results.csv and the six tables of the ICP paper's README, from the evaluation JSON files.

Only cells the config asked for appear. Zero-shot cells show accuracy ± lm-eval's standard error.
The best value of each column (within a group of rows that compete: lowest perplexity, highest
accuracy / IoU) is bold; where standard errors exist, only when it beats the runner-up by more
than their combined standard error, sqrt(se_1^2 + se_2^2). Otherwise the best and every value
within that margin of it are marked tied (†).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from ..experiments import SAM_TABLES, SPARSITY_TABLES, table_runs
from .format import label as config_label, markdown, method_label, ordered_methods

TITLES = {
    "table1": "Table 1. Perplexity at unstructured sparsity",
    "table2": "Table 2. Zero-shot accuracy (%) at unstructured sparsity",
    "table3": "Table 3. SAM single-point IoU at unstructured sparsity",
    "table4": "Table 4. Perplexity under N:M sparsity, alone and with weight quantization",
    "table5": "Table 5. Zero-shot accuracy (%) under N:M sparsity, alone and with weight quantization",
    "table6": "Table 6. SAM single-point IoU under N:M sparsity, alone and with weight quantization",
    "ic_perplexity": "Input compensation (IC paper, Table 3). Perplexity with and without IC",
    "ic_zeroshot": "Input compensation (IC paper, Table 4). Zero-shot accuracy (%) with and without IC",
    "ic_sam": "Input compensation on SAM (ours: the pool on the patch embeddings). Single-point IoU with and without IC",
}
TABLE_ORDER = ("table1", "table2", "table3", "table4", "table5", "table6", "ic_perplexity", "ic_zeroshot", "ic_sam")
# the identity columns come from the `id` block every evaluation JSON carries (Experiment.identity)
IDENTITY = ("model", "run", "method", "pattern", "sparsity", "wbits", "run_hash", "stages")
COLUMNS = [*IDENTITY[:6], "evaluation", "dataset", "metric", "value", "stderr", "count", "tokens", "subset",
           "run_hash", "stages", "versions", "machine", "source", "note"]


def collect_results(paths: list[str]) -> pd.DataFrame:
    """One row per number: perplexities as they are, zero-shot as one row per task plus the mean."""
    rows: list[dict[str, Any]] = []
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as err:  # torn or edited: removed, so the next run re-evaluates
            Path(path).unlink(missing_ok=True)
            raise ValueError(f"{path} is damaged ({err}); it has been removed: run the workflow again and "
                             f"its evaluation rule rebuilds it") from None
        base = {k: data.get(k) for k in IDENTITY}
        base["stages"] = "+".join(base["stages"] or [])
        base["versions"] = json.dumps(data.get("versions", {}), sort_keys=True)
        base["machine"] = json.dumps(data.get("machine", {}), sort_keys=True)
        base["source"] = str(path)
        if data["metric"] == "perplexity":
            subset = data["windows"] * data["seqlen"] < data["text_tokens"] - data["seqlen"]
            rows.append({**base, "evaluation": "perplexity", "dataset": data["corpus"], "metric": "perplexity",
                         "value": data["value"], "count": data["windows"], "tokens": data["windows"] * data["seqlen"],
                         "subset": subset})
        elif data["metric"] == "zeroshot":
            errors = []
            for task, r in data["tasks"].items():
                errors.append(_number(r.get("stderr")))
                rows.append({**base, "evaluation": "zeroshot", "dataset": task, "metric": r["metric"],
                             "value": r["value"], "stderr": errors[-1], "count": r["n"], "subset": bool(data.get("limit"))})
            # the mean of independent task accuracies: se = sqrt(sum se_t^2) / tasks
            mean_se = None if None in errors or not errors else math.sqrt(sum(e * e for e in errors)) / len(errors)
            rows.append({**base, "evaluation": "zeroshot", "dataset": "mean", "metric": "mean",
                         "value": data["mean"], "stderr": mean_se, "count": None, "subset": bool(data.get("limit"))})
        elif data["metric"] == "inference":
            if not data.get("measured"):
                rows.append({**base, "evaluation": "inference", "dataset": "not measured", "metric": "reason",
                             "value": float("nan"), "note": data.get("reason")})
            for r in data.get("rows", []):
                case = f"{r['kind']}-{r['tokens']}-b{r['batch']}"
                if "failed" in r:
                    rows.append({**base, "evaluation": "inference", "dataset": case, "metric": "failed",
                                 "value": float("nan"), "count": r["batch"], "tokens": r["tokens"], "note": r["failed"]})
                    continue
                unit = "tokens_per_s" if r["kind"] == "prefill" else "ms_per_token"
                for metric, value in (("dense", r[f"dense_{unit}"]), ("2:4", r[f"sparse_{unit}"]), ("speedup", r["speedup"])):
                    rows.append({**base, "evaluation": "inference", "dataset": case, "metric": metric, "value": value,
                                 "count": r["batch"], "tokens": r["tokens"],
                                 "note": f"{data.get('sparse_linears')} of {data.get('linears')} linears sparse"})
        elif data["metric"] == "iou":
            rows.append({**base, "evaluation": "iou", "dataset": data["dataset"], "metric": "iou",
                         "value": data["value"], "count": data["instances"], "subset": True})
    return pd.DataFrame(rows, columns=COLUMNS)


def _number(value: Any) -> float | None:
    """lm-eval writes "N/A" where it has no standard error."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _setting(pattern: str, sparsity: float | None, wbits: int) -> str:
    if pattern == "dense":
        return "dense"
    name = f"{round(100 * sparsity)}%" if pattern == "unstructured" else pattern
    return name if wbits >= 16 else f"{name}+int{wbits}"


def _fmt(value: float, stderr: float | None, mark: str, percent: bool) -> str:
    scale = 100 if percent else 1
    text = f"{scale * value:.2f}"
    if stderr is not None:
        text += f" ± {scale * stderr:.2f}"
    return f"**{text}**" if mark == "best" else text + " †" if mark == "tied" else text


Cell = tuple[float, float | None]  # value, standard error


def _lookup(frame: pd.DataFrame, **where: Any) -> Cell | None:
    sel = frame
    for key, value in where.items():
        if value is None:
            sel = sel[sel[key].isna()]
        else:
            sel = sel[sel[key] == value]
    if sel.empty:
        return None
    stderr = sel["stderr"].iloc[0] if "stderr" in sel else None
    return float(sel["value"].iloc[0]), _number(stderr)


def rank_marks(cells: list[Cell | None], higher_better: bool) -> list[str]:
    """'best' (bold), 'tied' or '' for each cell of one column of competing rows.

    Without standard errors the best value is bold. With them, the best is bold only when it beats
    the runner-up by more than their combined standard error; otherwise the best and every value
    within that margin of it are tied."""
    present = [(i, c) for i, c in enumerate(cells) if c is not None]
    marks = [""] * len(cells)
    if not present:
        return marks
    order = sorted(present, key=lambda ic: ic[1][0], reverse=higher_better)
    best_index, (best, best_se) = order[0]
    if len(order) == 1 or best_se is None or any(c[1] is None for _, c in order):
        for i, (value, _) in present:
            marks[i] = "best" if value == best else ""
        return marks
    runner_up, runner_se = order[1][1]
    if abs(best - runner_up) > math.hypot(best_se, runner_se):
        marks[best_index] = "best"
        return marks
    for i, (value, se) in order:
        if abs(best - value) <= math.hypot(best_se, se):
            marks[i] = "tied"
    return marks


def _grid(frame: pd.DataFrame, groups: list[tuple[str, list[tuple[str, dict[str, Any]]]]],
          columns: list[tuple[str, dict[str, Any]]], higher_better: bool, percent: bool,
          first_header: list[str]) -> str:
    """Rows grouped (best per column is judged inside each group, Dense excluded); each cell = one lookup."""
    out_rows = []
    for group_name, members in groups:
        cells = [[_lookup(frame, **{**row_where, **col_where}) for _, col_where in columns] for _, row_where in members]
        competing = [k for k, (label, _) in enumerate(members) if label != "Dense"]
        marks = [[""] * len(columns) for _ in members]
        for j in range(len(columns)):
            for k, mark in zip(competing, rank_marks([cells[k][j] for k in competing], higher_better)):
                marks[k][j] = mark
        for k, (label, _) in enumerate(members):
            row = ["–" if c is None else _fmt(c[0], c[1], marks[k][j], percent) for j, c in enumerate(cells[k])]
            out_rows.append(([group_name] if group_name is not None else []) + [label] + row)
    return markdown(first_header + [c for c, _ in columns], out_rows)


def _row_groups(t: dict[str, Any], by_sparsity: bool, with_dense: bool = True) -> list[tuple[str, list[tuple[str, dict[str, Any]]]]]:
    """Table rows: the dense model, then the methods grouped by sparsity or by N:M (+ int) setting."""
    groups = [("", [("Dense", {"method": "dense"})])] if with_dense else []
    if by_sparsity:
        for s in t["sparsities"]:
            members = [(method_label(m), {"method": m, "pattern": "unstructured", "sparsity": float(s), "wbits": 16}) for m in t["methods"]]
            groups.append((f"{round(100 * s)}%", members))
    else:
        for pattern in t["patterns"]:
            for bits in t.get("wbits", [16]):
                members = [(method_label(m), {"method": m, "pattern": pattern, "wbits": int(bits)}) for m in t["methods"]]
                groups.append((_setting(pattern, None, int(bits)), members))
    return groups


def _table_1_or_4(frame: pd.DataFrame, config: dict[str, Any], key: str) -> list[str]:
    t = config["tables"][key]
    blocks = []
    ppl = frame[frame["evaluation"] == "perplexity"]
    for model in t["models"]:
        mf = ppl[ppl["model"] == model]
        title = f"**{config_label(config, 'models', model)}**"
        if key == "table1":
            corpus = t["corpora"][0]
            cf = mf[mf["dataset"] == corpus]
            columns = [(f"{round(100 * s)}%", {"sparsity": float(s)}) for s in t["sparsities"]]
            members = [(method_label(m), {"method": m, "pattern": "unstructured", "wbits": 16}) for m in t["methods"]]
            dense = _lookup(cf, method="dense") if t.get("dense", True) else None
            grid = _grid(cf, [(None, members)], columns, False, False, ["Method"])
            dense_line = f"Dense: {dense[0]:.2f}" if dense is not None else ""
            blocks.append(f"{title} — perplexity on {config_label(config, 'corpora', corpus)}. {dense_line}\n\n{grid}")
        else:  # table4, and the IC table: one column per corpus
            columns = [(config_label(config, "corpora", c), {"dataset": c}) for c in t["corpora"]]
            groups = _row_groups(t, by_sparsity=key == "ic_perplexity", with_dense=t.get("dense", True))
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
        by_sparsity = key in ("table2", "ic_zeroshot")
        groups = _row_groups(t, by_sparsity=by_sparsity, with_dense=t.get("dense", True))
        header = ["Sparsity" if by_sparsity else "Setting", "Method"]
        blocks.append(f"**{config_label(config, 'models', model)}**\n\n" + _grid(mf, groups, columns, True, True, header))
    return blocks


def _table_3_or_6(frame: pd.DataFrame, config: dict[str, Any], key: str) -> list[str]:
    """Rows: methods grouped by sparsity (3, IC on SAM) or setting (6); columns: each model on each image set."""
    t = config["tables"][key]
    iou = frame[frame["evaluation"] == "iou"]
    columns = [(f"{config_label(config, 'models', m)} {config_label(config, 'image_sets', d)}", {"model": m, "dataset": d})
               for m in t["models"] for d in t["datasets"]]
    by_sparsity = key in SPARSITY_TABLES
    groups = _row_groups(t, by_sparsity=by_sparsity, with_dense=t.get("dense", True))
    header = ["Sparsity" if by_sparsity else "Setting", "Method"]
    return ["Single-point mIoU (%).\n\n" + _grid(iou, groups, columns, True, True, header)]


def _perplexity_note(frame: pd.DataFrame, config: dict[str, Any]) -> str:
    ppl = frame[frame["evaluation"] == "perplexity"].dropna(subset=["tokens"])
    spans = []
    for dataset, rows in ppl.groupby("dataset", sort=False):
        tokens, windows = int(rows["tokens"].max()), int(rows["count"].max())
        whole = "" if rows["subset"].any() else ", the whole text"
        spans.append(f"{config_label(config, 'corpora', dataset)}: {tokens:,} tokens ({windows} windows{whole})")
    return f"_Perplexity over {'; '.join(spans)}._\n" if spans else ""


def _zeroshot_note(frame: pd.DataFrame) -> str:
    zs = frame[(frame["evaluation"] == "zeroshot") & (frame["dataset"] != "mean")]
    items = sorted({int(n) for n in zs["count"].dropna()})
    note = (f"_Accuracy ± lm-eval's standard error, over {', '.join(map(str, items))} items per task; the mean's "
            "error treats tasks as independent. Bold: ahead of the runner-up by more than their combined "
            "standard error. †: tied for best (within that margin of the best value)._\n")
    if zs["subset"].any():
        note += "_Zero-shot accuracy on a subset of each task (`zeroshot.limit`)._\n"
    return note


def cost_table(series: pd.DataFrame, config: dict[str, Any]) -> str:
    """The paper's Table 9 from the runs' own records: pruning time and peak accelerator memory per
    method (mean over a model's runs of that method), with the device each ran on."""
    if series.empty:
        return ""
    if "device" not in series:  # written by an older version of the pipeline
        series = series.assign(device="not recorded")
    rows = []
    order = ordered_methods(series["method"])
    series = series.assign(rank=series["method"].map(order.index))
    for (model, _, method), runs in series.groupby(["model", "rank", "method"], sort=True):
        peak = runs["peak_gpu_gib"].max()
        rows.append([config_label(config, "models", model), method_label(method), str(len(runs)),
                     f"{runs['seconds'].mean():.1f}", f"{peak:.2f}" if peak > 0 else "– (CPU)",
                     ", ".join(sorted(set(map(str, runs["device"]))))])
    header = ["Model", "Method", "Runs", "Pruning time per run (s)", "Peak accelerator memory (GiB)", "Device"]
    return ("## Cost (the paper's Table 9)\n\n" + markdown(header, rows) + "\n\n_From each pruning job's own "
            "record (`pruning.json`): the block walk's time, without process start or evaluation._\n")


def inference_table(frame: pd.DataFrame, config: dict[str, Any]) -> str:
    """What 2:4 buys at inference: dense vs semi-structured sparse linears, measured side by side."""
    inf = frame[frame["evaluation"] == "inference"]
    title = "## 2:4 at inference\n\n"
    if inf.empty:
        return ""
    model = config_label(config, "models", str(inf["model"].iloc[0]))
    method = method_label(str(inf["method"].iloc[0]))
    if (inf["dataset"] == "not measured").any():
        reason = inf.loc[inf["dataset"] == "not measured", "note"].iloc[0]
        return title + f"_Not measured: {reason}._\n"
    rows = []
    for case, cells in inf.groupby("dataset", sort=False):
        kind, tokens, batch = case.split("-")
        value = dict(zip(cells["metric"], cells["value"]))
        if "failed" in value:
            what = f"Prefill, {int(tokens):,} tokens" if kind == "prefill" else f"Decode, batch {batch[1:]}"
            rows.append([what, "–", "–", f"failed: {cells['note'].iloc[0]}"])
            continue
        if kind == "prefill":
            label, fmt = f"Prefill, {int(tokens):,} tokens (tokens/s)", "{:,.0f}"
        else:
            label, fmt = f"Decode, batch {batch[1:]}, {int(tokens)} new tokens (ms/token)", "{:.2f}"
        rows.append([label, fmt.format(value["dense"]), fmt.format(value["2:4"]), f"{value['speedup']:.2f}×"])
    machine = json.loads(inf["machine"].iloc[0] or "{}")
    versions = json.loads(inf["versions"].iloc[0] or "{}")
    measured = inf.loc[inf["metric"] != "failed", "note"]  # "<k> of <n> linears sparse" on every measured row
    linears = f" ({measured.iloc[0]})" if not measured.empty else ""
    note = (f"_{model}, its {method} 2:4 run: the 2:4 linears as `torch.sparse.to_sparse_semi_structured` tensors"
            f"{linears}, timed alternately with the dense model in one process on "
            f"{machine.get('gpu', machine.get('device'))}, torch {versions.get('torch')}; medians. Speedup > 1: "
            "the 2:4 model is faster._\n")
    return title + markdown(["Case", "Dense", "2:4 (semi-structured)", "Speedup"], rows) + "\n\n" + note


def render_tables(frame: pd.DataFrame, config: dict[str, Any], plots: list[str] | None = None) -> str:
    """`results/tables.md`: every table the config asks for, with its notes; others say why they are absent."""
    parts = ["# Results\n", "Recomputed by this pipeline. Every number is also in `results/results.csv`, with its provenance.\n"]
    if config.get("notes"):
        parts.append(config["notes"].strip() + "\n")
    for key in TABLE_ORDER:
        t = config["tables"].get(key)
        if key.startswith("ic_") and not t and key not in config.get("table_notes", {}):
            continue  # the second paper's tables appear only where a config asks for them
        parts.append(f"## {TITLES[key]}\n")
        if not t:
            reason = config.get("table_notes", {}).get(key, "not asked for by this config")
            parts.append(f"_Omitted: {reason}_\n")
            continue
        if t.get("note"):
            parts.append(f"_{t['note'].strip()}_\n")
        # only the table's own runs: ablation runs share its method and sparsity but not its settings
        frame_t = frame[frame["run"].isin(table_runs(config, key))]
        if key in ("table1", "table4", "ic_perplexity"):
            blocks = _table_1_or_4(frame_t, config, key)
        elif key in ("table2", "table5", "ic_zeroshot"):
            blocks = _table_2_or_5(frame_t, config, key)
        else:
            blocks = _table_3_or_6(frame_t, config, key)
        parts.extend(b + "\n" for b in blocks)
        if key in ("table1", "table4", "ic_perplexity"):
            parts.append(_perplexity_note(frame_t, config))
        if key in ("table2", "table5", "ic_zeroshot"):
            parts.append(_zeroshot_note(frame_t))
        if key in SAM_TABLES:
            counts = frame_t[frame_t["evaluation"] == "iou"].groupby("dataset")["count"].max()
            if not counts.empty:
                sizes = ", ".join(f"{config_label(config, 'image_sets', d)}: {int(c)}" for d, c in counts.items())
                parts.append(f"_Instances per evaluation ({sizes}); one point per instance (see icp/evaluate/sam_iou.py)._\n")
    from .ablations import ablation_section

    if config.get("ablations"):
        parts.append(ablation_section(frame, config))
    if config.get("inference"):
        parts.append(inference_table(frame, config))
    cost = next((p for p in (plots or []) if Path(p).name == "cost.csv"), None)
    if cost is not None:
        parts.append(cost_table(pd.read_csv(cost), config))
    # the ablation plots sit in their own section
    images = [p for p in (plots or []) if p.endswith(".png") and not Path(p).name.startswith("ablation_")]
    if images:
        parts.append("## Plots\n")
        parts.extend(f"![{Path(p).stem}](plots/{Path(p).name})\n" for p in images)
    return "\n".join(parts)

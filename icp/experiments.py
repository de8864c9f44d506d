"""From the workflow config to the list of experiments, their output paths and parameter hashes.

Pure Python (no Snakemake) so it can be tested on its own; `workflow/rules/common.smk` calls it.
Every path that depends on settings carries a short hash of exactly those settings, so a change
re-runs only what depends on it and results of different settings never overwrite each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .models.loading import is_sam_source
from .runs import RunSpec, short_hash

LANGUAGE_TABLES = ("table1", "table2", "table4", "table5")
PERPLEXITY_TABLES = ("table1", "table4")
ZEROSHOT_TABLES = ("table2", "table5")
SAM_TABLES = ("table3", "table6")


@dataclass(frozen=True)
class Experiment:
    """One model of one table row: a pruned run, or the dense model (`spec` is None)."""

    model: str
    run: str  # path component: 'dense' or '<method>-<pattern>[-s<pct>][-w<bits>]-<hash>'
    spec: RunSpec | None

    @property
    def is_dense(self) -> bool:
        return self.spec is None

    @property
    def spec_data(self) -> dict[str, Any]:
        return {} if self.spec is None else self.spec.to_dict()


def run_label(method: str, pattern: str, sparsity: float | None, wbits: int) -> str:
    parts = [method, "unstructured" if pattern == "unstructured" else pattern.replace(":", "of")]
    if pattern == "unstructured":
        parts.append(f"s{round(100 * sparsity):02d}")
    if wbits < 16:
        parts.append(f"w{wbits}")
    return "-".join(parts)


def is_sam(config: dict[str, Any], model: str) -> bool:
    """SAM models come from segment-anything checkpoints; every other model is a language model."""
    return is_sam_source(config["models"][model]["source"])


def calibration_key(config: dict[str, Any], model: str) -> str:
    """Hash of everything that decides the calibration inputs (token windows or images) and block-0 inputs."""
    if is_sam(config, model):
        cal = config["sam"]["calibration"]
        return short_hash({"model": config["models"][model], "calibration": cal, "images": config["image_sets"][cal["images"]]})
    cal = config["calibration"]
    return short_hash({"model": config["models"][model], "calibration": cal, "corpus": config["corpora"][cal["corpus"]]})


def calibration_path(config: dict[str, Any], model: str, root: str = "results") -> str:
    kind = "images" if is_sam(config, model) else "tokens"
    return f"{root}/{model}/data/calib-{kind}-{calibration_key(config, model)}.pt"


def iou_key(config: dict[str, Any], dataset: str) -> str:
    return short_hash({"images": config["image_sets"][dataset], "evaluation": config["sam"].get("evaluation", {})})


def iou_path(config: dict[str, Any], model: str, run: str, dataset: str, root: str = "results") -> str:
    return f"{root}/{model}/evals/{run}/iou-{dataset}-{iou_key(config, dataset)}.json"


def eval_corpus_key(config: dict[str, Any], model: str, corpus: str) -> str:
    ppl = config["perplexity"]
    return short_hash({"model": config["models"][model], "corpus": config["corpora"][corpus],
                       "seqlen": ppl["seqlen"], "max_windows": ppl.get("max_windows")})


def zeroshot_key(config: dict[str, Any]) -> str:
    return short_hash(config["zeroshot"])


# method options that choose how, not what: the SparseGPT sweep's kernel gives the same weights
RESULT_NEUTRAL_OPTIONS = ("kernel",)


def make_spec(config: dict[str, Any], method: str, pattern: str, sparsity: float | None, wbits: int) -> RunSpec:
    settings = dict(config["methods"].get(method) or {})
    if method == "icp":
        inner = settings.get("inner", "sparsegpt")
        return RunSpec(
            method="icp", pattern=pattern, sparsity=sparsity if sparsity is not None else 0.0, wbits=wbits,
            inner=inner, alpha=float(settings.get("alpha", 1.0)), beta=float(settings.get("beta", 1.0)),
            compensation=dict(settings.get("compensation") or {}),
            method_options=dict(config["methods"].get(inner) or {}),
            track_error=bool(config["engine"].get("track_error", True)),
        )
    return RunSpec(
        method=method, pattern=pattern, sparsity=sparsity if sparsity is not None else 0.0, wbits=wbits,
        method_options=settings, track_error=bool(config["engine"].get("track_error", True)),
    )


def experiment(config: dict[str, Any], model: str, method: str, pattern: str, sparsity: float | None, wbits: int) -> Experiment:
    if method == "dense":
        return Experiment(model, "dense", None)
    spec = make_spec(config, method, pattern, sparsity, wbits)
    hashed = spec.to_dict()
    hashed["method_options"] = {k: v for k, v in hashed["method_options"].items() if k not in RESULT_NEUTRAL_OPTIONS}
    digest = short_hash({
        "spec": hashed,
        "calibration": calibration_key(config, model),
        "blocks_per_step": config["engine"]["blocks_per_step"],
    })
    return Experiment(model, f"{run_label(method, pattern, sparsity, wbits)}-{digest}", spec)


def table_rows(config: dict[str, Any], table: str) -> list[tuple[str, str, str, float | None, int]]:
    """(model, method, pattern, sparsity, wbits) of every cell a table asks for, dense included."""
    t = config["tables"].get(table)
    if not t:
        return []
    rows = []
    for model in t["models"]:
        if t.get("dense", True):
            rows.append((model, "dense", "dense", None, 16))
        for method in t["methods"]:
            if table in ("table1", "table2", "table3"):
                for s in t["sparsities"]:
                    rows.append((model, method, "unstructured", float(s), 16))
            else:
                for pattern in t["patterns"]:
                    for bits in t.get("wbits", [16]):
                        rows.append((model, method, pattern, None, int(bits)))
    return rows


def table_experiments(config: dict[str, Any], table: str) -> list[Experiment]:
    seen: dict[tuple[str, str], Experiment] = {}
    for row in table_rows(config, table):
        exp = experiment(config, *row)
        seen.setdefault((exp.model, exp.run), exp)
    return list(seen.values())


def all_experiments(config: dict[str, Any]) -> dict[tuple[str, str], Experiment]:
    out: dict[tuple[str, str], Experiment] = {}
    for table in (*LANGUAGE_TABLES, *SAM_TABLES):
        for exp in table_experiments(config, table):
            out.setdefault((exp.model, exp.run), exp)
    return out


def evaluation_targets(config: dict[str, Any], root: str = "results") -> list[str]:
    """Every evaluation JSON the tables need."""
    targets: list[str] = []
    for table in PERPLEXITY_TABLES:
        t = config["tables"].get(table)
        if not t:
            continue
        for exp in table_experiments(config, table):
            for corpus in t["corpora"]:
                targets.append(perplexity_path(config, exp.model, exp.run, corpus, root))
    for table in ZEROSHOT_TABLES:
        if config["tables"].get(table):
            for exp in table_experiments(config, table):
                targets.append(zeroshot_path(config, exp.model, exp.run, root))
    for table in SAM_TABLES:
        t = config["tables"].get(table)
        if t:
            for exp in table_experiments(config, table):
                targets.extend(iou_path(config, exp.model, exp.run, d, root) for d in t["datasets"])
    return sorted(set(targets))


def perplexity_path(config: dict[str, Any], model: str, run: str, corpus: str, root: str = "results") -> str:
    return f"{root}/{model}/evals/{run}/ppl-{corpus}-{eval_corpus_key(config, model, corpus)}.json"


def zeroshot_path(config: dict[str, Any], model: str, run: str, root: str = "results") -> str:
    return f"{root}/{model}/evals/{run}/zeroshot-{zeroshot_key(config)}.json"


def check_config(config: dict[str, Any]) -> None:
    """Cross-references the schema cannot express; each error names the offending key."""
    known_methods = {"magnitude", "wanda", "sparsegpt", "icp"}
    if config["calibration"]["corpus"] not in config["corpora"]:
        raise ValueError(f"calibration.corpus {config['calibration']['corpus']!r} is not defined under 'corpora'")
    image_sets = config.get("image_sets") or {}
    for table, t in (config.get("tables") or {}).items():
        if not t:
            continue
        for model in t["models"]:
            if model not in config["models"]:
                raise ValueError(f"tables.{table}.models: unknown model {model!r}; defined: {sorted(config['models'])}")
            if (table in SAM_TABLES) != is_sam(config, model):
                kind = "a SAM checkpoint (.pth)" if table in SAM_TABLES else "a language model"
                raise ValueError(f"tables.{table}.models: {model!r} is not {kind}")
        if table in SAM_TABLES:
            cal = (config.get("sam") or {}).get("calibration")
            if not cal:
                raise ValueError(f"tables.{table} needs sam.calibration (images, nsamples, seed)")
            if cal["images"] not in image_sets:
                raise ValueError(f"sam.calibration.images: unknown image set {cal['images']!r}; defined: {sorted(image_sets)}")
            for dataset in t["datasets"]:
                if dataset not in image_sets:
                    raise ValueError(f"tables.{table}.datasets: unknown image set {dataset!r}; defined: {sorted(image_sets)}")
                if image_sets[dataset]["source"] not in ("sa1b", "coco"):
                    raise ValueError(f"tables.{table}.datasets: {dataset!r} has no annotations (source must be sa1b or coco)")
        for method in t["methods"]:
            if method not in known_methods:
                raise ValueError(f"tables.{table}.methods: unknown method {method!r}; known: {sorted(known_methods)}")
        for corpus in t.get("corpora", []):
            if corpus not in config["corpora"]:
                raise ValueError(f"tables.{table}.corpora: unknown corpus {corpus!r}; defined: {sorted(config['corpora'])}")
        for s in t.get("sparsities", []):
            if not 0 < float(s) < 1:
                raise ValueError(f"tables.{table}.sparsities: {s} is outside (0, 1)")
    # build every run once, so a bad pattern or method setting fails before any job starts
    for exp in all_experiments(config).values():
        if exp.spec is not None:
            exp.spec.as_pattern()


def run_records(config: dict[str, Any], root: str = "results") -> list[str]:
    """The pruning record (pruning.json) of every pruned run the tables need."""
    return sorted(f"{root}/{e.model}/runs/{e.run}/model/pruning.json" for e in all_experiments(config).values() if not e.is_dense)

"""From the workflow config to the list of experiments, their output paths and parameter hashes.

Pure Python, no Snakemake and no torch (a DAG build imports it), so it can be tested on its own;
`workflow/rules/common.smk` calls it. Every path that depends on settings carries a short hash of
exactly those settings, so a change re-runs only what depends on it and results of different
settings never overwrite each other. The paths themselves are `icp.layout`'s templates.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import layout
from .layout import SAFE_NAME, is_sam_source, short_hash
from .registry import METHODS, STAGES, method_label, split_method
from .spec import ICP_DEFAULTS, RunSpec, hashed_compensation, hashed_stage_settings, stage_settings

# the ICP paper's six tables, and the input-compensation paper's two (its Tables 3 and 4)
LANGUAGE_TABLES = ("table1", "table2", "table4", "table5", "ic_perplexity", "ic_zeroshot")
PERPLEXITY_TABLES = ("table1", "table4", "ic_perplexity")
ZEROSHOT_TABLES = ("table2", "table5", "ic_zeroshot")
SAM_TABLES = ("table3", "table6", "ic_sam")
SPARSITY_TABLES = ("table1", "table2", "table3", "ic_perplexity", "ic_zeroshot", "ic_sam")  # rows by sparsity, not N:M


@dataclass(frozen=True)
class Stage:
    """A post-pruning stage of a run: its name (a key of registry.STAGES), its settings, the
    calibration its data come from, and the run it starts from."""

    name: str
    settings: dict[str, Any]
    calibration: str  # calibration_key of its windows
    input_run: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "settings": self.settings, "calibration": self.calibration, "input_run": self.input_run}


@dataclass(frozen=True)
class Experiment:
    """One model of one table row: a pruned run (with its post-pruning stages, if any), or the
    dense model (`spec` is None)."""

    model: str
    run: str  # path component: 'dense', or the pruning run's name plus '+<stage>-<hash>' per stage
    spec: RunSpec | None
    calibration: str = ""  # calibration_key of the windows it is pruned on (ablations may change them)
    stages: tuple[Stage, ...] = ()

    @property
    def is_dense(self) -> bool:
        return self.spec is None

    @property
    def spec_data(self) -> dict[str, Any]:
        return {} if self.spec is None else self.spec.to_dict()

    @property
    def pruning_run(self) -> str:
        """The run whose blocks are pruned (the run itself when it has no stages)."""
        return layout.split_run(self.run)[0]

    @property
    def method(self) -> str:
        """What the tables call it: 'dense', 'sparsegpt', 'sparsegpt+ic', ..."""
        if self.spec is None:
            return "dense"
        return "+".join([self.spec.method, *(stage.name for stage in self.stages)])

    def identity(self) -> dict[str, Any]:
        """The `id` block of every JSON a job of this run writes, and of its results.csv rows."""
        spec = self.spec_data
        return {
            "model": self.model, "run": self.run, "method": self.method, "label": method_label(self.method),
            "pattern": spec.get("pattern", "dense"),
            "sparsity": spec.get("sparsity") if spec.get("pattern") == "unstructured" else None,
            "wbits": spec.get("wbits", 16),
            "run_hash": layout.run_hash(self.run) if self.spec is not None else None,
            "stages": [stage.name for stage in self.stages],
        }


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


def model_entry(config: dict[str, Any], model: str) -> dict[str, Any]:
    """A model's entry as the hashes of its data and evaluations hold it: its own method settings
    are left out (they reach only the runs of their method, through the run's spec), and so are its
    own stage settings (they reach only the stage's hash), and its zero-shot batch (memory only)."""
    return {k: v for k, v in config["models"][model].items() if k not in ("methods", "stages", "zeroshot_batch_size")}


def calibration_section(config: dict[str, Any], model: str, override: dict[str, Any] | None = None) -> dict[str, Any]:
    """The calibration settings of a model's runs: `calibration` (language models) or
    `sam.calibration` (SAM), with a method's own `calibration` override (e.g. a seed) on top."""
    base = config["sam"]["calibration"] if is_sam(config, model) else config["calibration"]
    return {**base, **override} if override else base


def calibration_key(config: dict[str, Any], model: str, override: dict[str, Any] | None = None) -> str:
    """Hash of everything that decides the calibration inputs (token windows or images) and block-0 inputs."""
    cal = calibration_section(config, model, override)
    if is_sam(config, model):
        return short_hash({"model": model_entry(config, model), "calibration": cal, "images": config["image_sets"][cal["images"]]})
    return short_hash({"model": model_entry(config, model), "calibration": cal, "corpus": config["corpora"][cal["corpus"]]})


def calibration_path(config: dict[str, Any], model: str, key: str | None = None, root: str = layout.ROOT) -> str:
    """The calibration inputs behind `key` (default: the tables' calibration)."""
    kind = "calibration_images" if is_sam(config, model) else "calibration_tokens"
    return layout.path(kind, root, model=model, key=key or calibration_key(config, model))


def shapes_dir(config: dict[str, Any], name: str, root: str = layout.ROOT) -> str | None:
    """Where the workflow writes a synthetic (`source: shapes`) image set; None for other sources."""
    spec = (config.get("image_sets") or {})[name]
    return layout.path("shape_images", root, key=short_hash(spec)) if spec["source"] == "shapes" else None


def concrete_image_set(config: dict[str, Any], name: str, root: str = layout.ROOT) -> dict[str, Any]:
    """The image-set entry the readers get: a shapes set becomes the COCO / SA-1B / folder set the
    workflow wrote for it (see icp.data.shapes); other sets are passed through."""
    spec = dict(config["image_sets"][name])
    directory = shapes_dir(config, name, root)
    if directory is None:
        return spec
    fmt = spec.get("format", "coco")
    extra = {k: spec[k] for k in ("max_images", "max_instances", "label") if k in spec}
    if fmt == "coco":
        return {"source": "coco", "annotations": f"{directory}/annotations.json", "images": f"{directory}/images", **extra}
    return {"source": "sa1b" if fmt == "sa1b" else "folder", "dir": f"{directory}/images", **extra}


def iou_key(config: dict[str, Any], dataset: str) -> str:
    return short_hash({"images": config["image_sets"][dataset], "evaluation": config["sam"].get("evaluation", {})})


def iou_path(config: dict[str, Any], model: str, run: str, dataset: str, root: str = layout.ROOT) -> str:
    return layout.path("iou", root, model=model, run=run, dataset=dataset, key=iou_key(config, dataset))


def eval_corpus_key(config: dict[str, Any], model: str, corpus: str) -> str:
    ppl = config["perplexity"]
    return short_hash({"model": model_entry(config, model), "corpus": config["corpora"][corpus],
                       "seqlen": ppl["seqlen"], "max_windows": ppl.get("max_windows")})


def zeroshot_key(config: dict[str, Any]) -> str:
    return short_hash(config["zeroshot"])


def zeroshot_settings(config: dict[str, Any], model: str) -> dict[str, Any]:
    """The zero-shot settings one model's evaluations run with: `zeroshot`, with the model's own
    `zeroshot_batch_size` (memory only: not part of `zeroshot_key`)."""
    batch = config["models"][model].get("zeroshot_batch_size")
    return {**config["zeroshot"], "batch_size": batch} if batch else dict(config["zeroshot"])


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def method_settings(config: dict[str, Any], method: str, model: str | None = None) -> dict[str, Any]:
    """A method's settings for one model: `methods.<method>`, with the model's own
    `models.<model>.methods.<method>` merged over it key by key (nested sections too), so a family
    can run with its own settings (config/paper.yaml: the official scripts' per-family ICP)."""
    settings = dict(config["methods"].get(method) or {})
    if model is not None:
        own = ((config["models"].get(model) or {}).get("methods") or {}).get(method) or {}
        settings = _merged(settings, own)
    return settings


def stage_config(config: dict[str, Any], stage: str, model: str | None = None) -> dict[str, Any]:
    """A post-pruning stage's settings for one model: `stages.<stage>` (the stage's defaults where
    absent), with the model's own `models.<model>.stages.<stage>` merged over it."""
    settings = dict((config.get("stages") or {}).get(stage) or {})
    if model is not None:
        own = ((config["models"].get(model) or {}).get("stages") or {}).get(stage) or {}
        settings = _merged(settings, own)
    return settings


def make_spec(config: dict[str, Any], method: str, pattern: str, sparsity: float | None, wbits: int,
              model: str | None = None, settings: dict[str, Any] | None = None) -> RunSpec:
    settings = dict(method_settings(config, method, model) if settings is None else settings)
    settings.pop("calibration", None)  # decides the calibration data (see `experiment`), not the pruner
    if method == "icp":
        inner = settings.get("inner", ICP_DEFAULTS["inner"])
        inner_settings = method_settings(config, inner, model)
        inner_settings.pop("calibration", None)
        return RunSpec(
            method="icp", pattern=pattern, sparsity=sparsity if sparsity is not None else 0.0, wbits=wbits,
            inner=inner, alpha=float(settings.get("alpha", ICP_DEFAULTS["alpha"])),
            beta=float(settings.get("beta", ICP_DEFAULTS["beta"])),
            compensation=hashed_compensation(dict(settings.get("compensation") or {})),
            method_options=inner_settings,
            track_error=bool(config["engine"].get("track_error", True)),
        )
    return RunSpec(
        method=method, pattern=pattern, sparsity=sparsity if sparsity is not None else 0.0, wbits=wbits,
        method_options=settings, track_error=bool(config["engine"].get("track_error", True)),
    )


def experiment(config: dict[str, Any], model: str, method: str, pattern: str, sparsity: float | None, wbits: int) -> Experiment:
    """The run a table cell names: `method` is a method with optional stages ('sparsegpt+ic')."""
    if method == "dense":
        return Experiment(model, layout.DENSE, None, calibration_key(config, model))
    method, stage_names = split_method(method)
    settings = method_settings(config, method, model)
    spec = make_spec(config, method, pattern, sparsity, wbits, model, settings)
    calibration = calibration_key(config, model, settings.get("calibration"))
    digest = short_hash({
        "spec": spec.resume_key(),  # the spec without the options that choose how, not what
        "calibration": calibration,
        "blocks_per_step": config["engine"]["blocks_per_step"],
    })
    run = f"{run_label(method, pattern, sparsity, wbits)}-{digest}"
    stages = []
    for name in stage_names:
        own = stage_config(config, name, model)
        stage_calibration = calibration_key(config, model, own.get("calibration"))
        hashed = hashed_stage_settings(name, own)
        stage = Stage(name, own, stage_calibration, run)
        run = layout.stage_run(run, name, short_hash({"settings": hashed, "calibration": stage_calibration}))
        stages.append(stage)
    return Experiment(model, run, spec, calibration, tuple(stages))


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
            if table in SPARSITY_TABLES:
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


def table_runs(config: dict[str, Any], *tables: str) -> set[str]:
    """Run names (and 'dense') of the given tables, by default all six: a CSV may also hold the
    ablation sweeps' runs, which share a method and sparsity with table cells but not their settings."""
    return {e.run for key in (tables or (*LANGUAGE_TABLES, *SAM_TABLES)) for e in table_experiments(config, key)}


def all_experiments(config: dict[str, Any]) -> dict[tuple[str, str], Experiment]:
    """Every run the tables and the ablations need, each once (an ablation point at the tables'
    setting is the table's own run: same parameters, same hash)."""
    out: dict[tuple[str, str], Experiment] = {}
    for table in (*LANGUAGE_TABLES, *SAM_TABLES):
        for exp in table_experiments(config, table):
            out.setdefault((exp.model, exp.run), exp)
    for point in ablation_points(config):
        out.setdefault((point.experiment.model, point.experiment.run), point.experiment)
    if config.get("inference"):
        exp = inference_experiment(config)
        out.setdefault((exp.model, exp.run), exp)
    return out


# ---- 2:4 at inference: one 2:4 run timed against the dense model ---------------------------------


def inference_experiment(config: dict[str, Any]) -> Experiment:
    """The 2:4 run whose linears are timed with semi-structured kernels (`inference:` section)."""
    inf = config["inference"]
    return experiment(config, inf["model"], inf.get("method", "sparsegpt"), "2:4", None, 16)


def inference_settings(config: dict[str, Any]) -> dict[str, Any]:
    """How the `inference:` section times its run (everything but which run it is)."""
    return {k: v for k, v in (config.get("inference") or {}).items() if k not in ("model", "method")}


def inference_path(config: dict[str, Any], root: str = layout.ROOT) -> str:
    exp = inference_experiment(config)
    return layout.path("inference", root, model=exp.model, run=exp.run, key=short_hash(inference_settings(config)))


def calibration_settings(config: dict[str, Any], model: str, key: str) -> dict[str, Any]:
    """The calibration section behind `key`: the tables' own, a method's override of it, or one an
    ablation sweeps to."""
    candidates = [config] + [point.config for point in ablation_points(config) if point.experiment.model == model]
    for cfg in candidates:
        overrides = [None] + [method_settings(cfg, m, model).get("calibration") for m in cfg["methods"]]
        overrides += [stage_config(cfg, s, model).get("calibration") for s in STAGES]
        for override in overrides:
            if calibration_key(cfg, model, override) == key:
                return calibration_section(cfg, model, override)
    raise ValueError(f"no calibration setting of model {model!r} has the key {key!r}")


# ---- ablations: one parameter swept around the tables' setting (the paper's Figure 4) --------------


@dataclass(frozen=True)
class SweptParameter:
    """A parameter an `ablations:` sweep may vary: where it lives in the config and what it may be."""

    path: tuple[str, ...]
    methods: tuple[str, ...]  # the methods it means something for
    label: str
    default: float  # its value when the config leaves it out
    allowed: str  # the valid range, as the error message states it
    valid: Callable[[float, list[float]], bool]  # (value, the sweep's sparsities) -> allowed?
    integer: bool = False


SWEPT_PARAMETERS = {
    "alpha": SweptParameter(("methods", "icp", "alpha"), ("icp",), "alpha (inter-block rearrangement)", ICP_DEFAULTS["alpha"],
                            "in (0, 1]", lambda v, _: 0 < v <= 1),
    "beta": SweptParameter(("methods", "icp", "beta"), ("icp",), "beta (intra-block rearrangement)", ICP_DEFAULTS["beta"],
                           "> 0 with beta * sparsity < 1", lambda v, sparsities: v > 0 and all(v * s < 1 for s in sparsities)),
    "epochs": SweptParameter(("methods", "icp", "compensation", "epochs"), ("icp",), "compensation epochs", 1,
                             ">= 0", lambda v, _: v >= 0, integer=True),
    "lr": SweptParameter(("methods", "icp", "compensation", "lr"), ("icp",), "compensation learning rate", 1e-4,
                         "> 0", lambda v, _: v > 0),
    "nsamples": SweptParameter(("calibration", "nsamples"), ("magnitude", "wanda", "sparsegpt", "icp"),
                               "calibration windows", 128, ">= 1", lambda v, _: v >= 1, integer=True),
}


@dataclass(frozen=True)
class AblationPoint:
    """One run of a sweep: `parameter` set to `value`, everything else as the tables have it."""

    parameter: str
    value: float
    method: str
    sparsity: float
    experiment: Experiment
    config: dict[str, Any]  # the config with the value applied
    table_setting: bool  # the value is the tables' own


def table_setting(config: dict[str, Any], parameter: str, model: str | None = None) -> float:
    """The value the tables use for a swept parameter (for `model`, with its own method settings)."""
    swept = SWEPT_PARAMETERS[parameter]
    node: Any = config
    path = swept.path
    if path[0] == "methods" and model is not None:
        node, path = method_settings(config, path[1], model), path[2:]
    for key in path:
        if not isinstance(node, dict) or key not in node or node[key] is None:
            return swept.default
        node = node[key]
    return node


def _with_value(config: dict[str, Any], path: tuple[str, ...], value: float, model: str | None = None) -> dict[str, Any]:
    """The config with `path` set to `value`; a method setting is also set in the model's own
    settings where those override it, so the swept value is the one the run gets."""
    changed = copy.deepcopy(config)
    targets = [path]
    if path[0] == "methods" and model is not None and path[1] in ((config["models"][model].get("methods")) or {}):
        targets.append(("models", model, *path))
    for target in targets:
        node = changed
        for key in target[:-1]:
            if node.get(key) is None:
                node[key] = {}
            node = node[key]
        node[target[-1]] = value
    return changed


def ablation_corpus(config: dict[str, Any]) -> str:
    ablations = config.get("ablations") or {}
    if ablations.get("corpus"):
        return ablations["corpus"]
    table1 = (config.get("tables") or {}).get("table1") or {}
    if table1.get("corpora"):
        return table1["corpora"][0]
    raise ValueError("ablations.corpus is not set and table1 names no corpus to fall back on")


def ablation_points(config: dict[str, Any]) -> list[AblationPoint]:
    """Every (parameter, value, method, sparsity) of the `ablations:` section, as runs."""
    ablations = config.get("ablations")
    if not ablations:
        return []
    model = ablations["model"]
    points = []
    for parameter, sweep in ablations["sweeps"].items():
        swept = SWEPT_PARAMETERS[parameter]
        own = table_setting(config, parameter, model)
        for raw in sweep["values"]:
            value = int(raw) if swept.integer and float(raw).is_integer() else raw
            changed = _with_value(config, swept.path, value, model)
            for method in sweep.get("methods") or ["icp"]:
                for sparsity in ablations["sparsities"]:
                    exp = experiment(changed, model, method, "unstructured", float(sparsity), 16)
                    points.append(AblationPoint(parameter, value, method, float(sparsity), exp, changed,
                                                math.isclose(float(value), float(own))))
    return points


def check_ablations(config: dict[str, Any], shapes_for: Callable[[str], Any] | None = None) -> None:
    """Values a sweep may not take, named before any job starts. With `shapes_for(model)` (the
    model's layer shapes, or None when they are not known yet) every alpha/beta pair is also run
    through ICP's sparsity map, which rejects a layer pushed outside [0, 1)."""
    ablations = config.get("ablations")
    if not ablations:
        return
    model = ablations["model"]
    if model not in config["models"]:
        raise ValueError(f"ablations.model: unknown model {model!r}; defined: {sorted(config['models'])}")
    if is_sam(config, model):
        raise ValueError(f"ablations.model: {model!r} is a SAM model; ablations sweep language models")
    corpus = ablation_corpus(config)
    if corpus not in config["corpora"]:
        raise ValueError(f"ablations.corpus: unknown corpus {corpus!r}; defined: {sorted(config['corpora'])}")
    for s in ablations["sparsities"]:
        if not 0 < float(s) < 1:
            raise ValueError(f"ablations.sparsities: {s} is outside (0, 1)")
    for parameter, sweep in ablations["sweeps"].items():
        swept = SWEPT_PARAMETERS[parameter]
        where = f"ablations.sweeps.{parameter}"
        for method in sweep.get("methods") or ["icp"]:
            if method not in swept.methods:
                raise ValueError(f"{where}.methods: {parameter} means nothing for {method!r} (it applies to {list(swept.methods)})")
            if method not in config["methods"]:
                raise ValueError(f"{where}.methods: {method!r} has no settings under 'methods'")
        sparsities = [float(s) for s in ablations["sparsities"]]
        for value in sweep["values"]:
            if swept.integer and not float(value).is_integer():
                raise ValueError(f"{where}: {value} is not a whole number")
            if not swept.valid(value, sparsities):
                raise ValueError(f"{where}: {value} is not allowed ({parameter} must be {swept.allowed})")
    shapes = shapes_for(model) if shapes_for else None
    if shapes is None:
        return
    from .pattern import parse_pattern
    from .schedule import rearranged_map

    for point in ablation_points(config):
        spec = point.experiment.spec
        if spec.method == "icp":
            try:
                rearranged_map(shapes, parse_pattern("unstructured", point.sparsity, 16), spec.alpha, spec.beta)
            except ValueError as err:
                raise ValueError(f"ablations.sweeps.{point.parameter} = {point.value}: {err}") from None


SHAPES_FILE = "layer_shapes.json"  # beside the exported dense config: the layer shapes, read without the model code


def model_layer_shapes(config: dict[str, Any], model: str, root: str = layout.ROOT):
    """Layer shapes of a language model from the export's layer_shapes.json (no model code
    imported), its exported dense config, or the source's own config.json when the source is a
    local directory; None when none is on disk yet."""
    dense = Path(layout.path("dense_dir", root, model=model))
    saved = dense / SHAPES_FILE
    if saved.is_file():
        from .schedule import LayerShape

        try:
            return [[LayerShape(**layer) for layer in block] for block in json.loads(saved.read_text())]
        except (ValueError, TypeError):  # damaged: fall back to the config below
            pass
    for directory in (dense, Path(config["models"][model]["source"])):
        if (directory / "config.json").is_file():
            from .engine import layer_shapes
            from .models import adapter_for
            from .models.loading import load_config

            model_config = load_config(directory)
            return layer_shapes(adapter_for(model_config.model_type), model_config)
    return None


def evaluation_targets(config: dict[str, Any], root: str = layout.ROOT) -> list[str]:
    """Every evaluation JSON the tables need."""
    targets: list[str] = []
    if config.get("inference"):
        targets.append(inference_path(config, root))
    if config.get("ablations"):
        corpus = ablation_corpus(config)
        targets.append(perplexity_path(config, config["ablations"]["model"], "dense", corpus, root))
        for point in ablation_points(config):
            targets.append(perplexity_path(config, point.experiment.model, point.experiment.run, corpus, root))
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


def perplexity_path(config: dict[str, Any], model: str, run: str, corpus: str, root: str = layout.ROOT) -> str:
    return layout.path("perplexity", root, model=model, run=run, corpus=corpus, key=eval_corpus_key(config, model, corpus))


def zeroshot_path(config: dict[str, Any], model: str, run: str, root: str = layout.ROOT) -> str:
    return layout.path("zeroshot", root, model=model, run=run, key=zeroshot_key(config))


def with_schema_defaults(config: dict[str, Any], schema: str | Path) -> dict[str, Any]:
    """A copy of `config` as the Snakefile sees it: validated against the workflow's schema, its
    defaults filled in (run keys hash them, so code outside the workflow that names a run's files
    must start from this). The schema lives beside the Snakefile, not in the package."""
    from snakemake.utils import validate

    config = copy.deepcopy(config)
    validate(config, str(schema), set_default=True)
    return config


def check_names(config: dict[str, Any]) -> None:
    for section in ("models", "corpora", "image_sets"):
        for name in config.get(section) or {}:
            if not isinstance(name, str) or not SAFE_NAME.match(name):
                raise ValueError(f"{section}: {name!r} is not an allowed name: use letters, digits, '_', '-' and '.', "
                                 f"starting with a letter or digit (it names a folder under results/)")


def check_finite(node: Any, where: str = "config") -> None:
    """NaN and infinities pass every schema minimum and maximum: rejected here, wherever they are."""
    if isinstance(node, float) and not math.isfinite(node):
        raise ValueError(f"{where}: {node} is not a finite number")
    if isinstance(node, dict):
        for key, value in node.items():
            check_finite(value, f"{where}.{key}" if where != "config" else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            check_finite(value, f"{where}[{i}]")


def check_model_sources(config: dict[str, Any]) -> None:
    """A local model directory must exist and hold a family we support (read from its config.json,
    before anything is exported); hub ids are checked by the first job, before any compute."""
    from .models import ADAPTERS
    from .models.loading import looks_local, saved_model_type

    for name, entry in config["models"].items():
        source = entry["source"]
        if source.startswith(("pkg:", "assembled:")) or source.endswith(".gguf") or is_sam_source(source):
            continue
        directory = Path(source).expanduser()
        if looks_local(source) and not directory.is_dir():
            raise ValueError(f"models.{name}.source: {source!r}: no such directory")
        if directory.is_dir():
            family = saved_model_type(directory)
            if family is None:
                raise ValueError(f"models.{name}.source: {source!r} holds no config.json")
            if family not in ADAPTERS:
                raise ValueError(f"models.{name}.source: unsupported model family {family!r}; supported: {sorted(ADAPTERS)}")


def check_icp_runs(config: dict[str, Any], shapes_for: Callable[[str], Any] | None = None,
                   experiments: dict[tuple[str, str], Experiment] | None = None) -> None:
    """Every ICP run's compensation settings and alpha/beta sparsity map, before any job starts
    (with the model's layer shapes where they are known; otherwise the part that needs none).
    `experiments`: the config's runs, when the caller has them already."""
    from .pattern import parse_pattern
    from .spec import Compensation
    from .schedule import rearranged_map

    shapes_cache: dict[str, Any] = {}
    for exp in (experiments or all_experiments(config)).values():
        spec = exp.spec
        if spec is None or spec.method != "icp":
            continue
        where = f"methods.icp (model {exp.model!r}, run {exp.run})"
        try:
            Compensation(**spec.compensation)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}.compensation: {err}") from None
        pattern = spec.as_pattern()
        if pattern.is_nm:
            continue
        if spec.beta * spec.sparsity >= 1:
            raise ValueError(f"{where}: beta {spec.beta} x sparsity {spec.sparsity} puts q/k/v at or above 100 %")
        if shapes_for is not None and exp.model not in shapes_cache:
            shapes_cache[exp.model] = None if is_sam(config, exp.model) else shapes_for(exp.model)
        shapes = shapes_cache.get(exp.model)
        if shapes is not None:
            try:
                rearranged_map(shapes, parse_pattern("unstructured", spec.sparsity, 16), spec.alpha, spec.beta)
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None


def check_stage(config: dict[str, Any], stage: str, models: list[str], where: str) -> None:
    """A post-pruning stage's settings, for every model that runs it."""
    for model in models:
        if model not in config["models"]:
            continue  # named by the models check
        settings = stage_config(config, stage, model)
        try:
            stage_settings(stage, settings)
        except (TypeError, ValueError) as err:
            raise ValueError(f"stages.{stage} (model {model!r}): {err}") from None


def check_config(config: dict[str, Any], shapes_for: Callable[[str], Any] | None = None) -> None:
    """Cross-references the schema cannot express; each error names the offending key.
    `shapes_for(model)`: layer shapes for the alpha/beta checks (see check_ablations)."""
    known_methods = set(METHODS)
    check_finite(config)
    check_names(config)
    from .data.corpora import check_corpus

    for name, spec in config["corpora"].items():
        check_corpus(name, spec)
    check_model_sources(config)
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
                if concrete_image_set(config, dataset)["source"] not in ("sa1b", "coco"):
                    raise ValueError(f"tables.{table}.datasets: {dataset!r} has no annotations (source must be sa1b or coco)")
        for entry in t["methods"]:
            try:
                method, stages = split_method(entry)
            except ValueError as err:
                raise ValueError(f"tables.{table}.methods: {err}") from None
            if method == "dense":
                raise ValueError(f"tables.{table}.methods: the dense model is a row of every table already (tables.{table}.dense)")
            for stage in stages:
                check_stage(config, stage, t["models"], f"tables.{table}.methods: {entry!r}")
        for corpus in t.get("corpora", []):
            if corpus not in config["corpora"]:
                raise ValueError(f"tables.{table}.corpora: unknown corpus {corpus!r}; defined: {sorted(config['corpora'])}")
        for s in t.get("sparsities", []):
            if not 0 < float(s) < 1:
                raise ValueError(f"tables.{table}.sparsities: {s} is outside (0, 1)")
    check_ablations(config, shapes_for)
    from .methods.sparsegpt import check_lazy_columns

    sparsegpt = (config.get("methods") or {}).get("sparsegpt") or {}
    try:
        check_lazy_columns(sparsegpt.get("lazy_columns"), sparsegpt.get("blocksize", 128))
    except ValueError as err:
        raise ValueError(f"methods.sparsegpt.{err}") from None
    inf = config.get("inference")
    if inf:
        if inf["model"] not in config["models"] or is_sam(config, inf["model"]):
            raise ValueError(f"inference.model: {inf['model']!r} is not a language model of this config")
        if inf.get("method", "sparsegpt") not in known_methods or "+" in inf.get("method", ""):
            raise ValueError(f"inference.method: unknown method {inf['method']!r}; known: {sorted(known_methods)}")
    # build every run once, so a bad pattern or method setting fails before any job starts
    experiments = all_experiments(config)
    check_icp_runs(config, shapes_for, experiments)


def run_records(config: dict[str, Any], root: str = layout.ROOT) -> list[str]:
    """The record (pruning.json) of every pruned run the tables need, staged runs included."""
    return sorted(layout.path("run_record", root, model=e.model, run=e.run)
                  for e in all_experiments(config).values() if not e.is_dense)

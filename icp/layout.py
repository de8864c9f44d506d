"""Where every file of a results tree lives, and how a run is named: one module, no torch.

Each path is one template with Snakemake-style `{wildcards}`: the rules use the templates as their
`output:` / `log:` patterns, and the Python side fills the same templates with `path(...)`, so a
file is named in exactly one place. Hashes (`short_hash`) are of JSON-able settings, keys sorted.

A run's name is its pruning run, `<method>-<pattern>[-s<pct>][-w<bits>]-<hash>`, followed by one
`+<stage>-<hash>` per post-pruning stage (`sparsegpt-unstructured-s70-1a2b3c4d+ic-5e6f7a8b`): a
stage's output lives in a run directory of its own, next to the run it starts from, so changing a
stage never touches (or re-prunes) that run.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

ROOT = "results"

# ---- the files, as templates (every rule's output pattern is one of these) -------------------------
TEMPLATES: dict[str, str] = {
    # stage 1: the dense model and its data
    "dense_dir": "{root}/{model}/dense",
    "dense_config": "{root}/{model}/dense/config.json",
    "dense_weights": "{root}/{model}/dense/model.safetensors",
    "calibration_tokens": "{root}/{model}/data/calib-tokens-{key}.pt",
    "calibration_images": "{root}/{model}/data/calib-images-{key}.pt",
    "eval_tokens": "{root}/{model}/data/eval-{corpus}-{key}.pt",
    "shape_images": "{root}/shapes/{key}",
    "zeroshot_tasks": "{root}/zeroshot_tasks/{key}",
    # stage 2: dense activations (block-0 inputs; the dense model's last hidden states for IC)
    "block0_inputs": "{root}/{model}/activations/calib-{key}.pt",
    "dense_outputs": "{root}/{model}/activations/outputs-{key}.pt",
    # stage 3: pruning steps, the assembled model; post-pruning stages
    "step_blocks": "{root}/{model}/runs/{run}/steps/{group}.blocks",
    "step_record": "{root}/{model}/runs/{run}/steps/{group}.json",
    "step_carry": "{root}/{model}/runs/{run}/steps/{group}.carry.pt",
    "run_dir": "{root}/{model}/runs/{run}/model",
    "run_weights": "{root}/{model}/runs/{run}/model/model.safetensors",
    "run_record": "{root}/{model}/runs/{run}/model/pruning.json",
    "stage_progress": "{root}/{model}/runs/{run}/progress",
    # stage 4: evaluations
    "perplexity": "{root}/{model}/evals/{run}/ppl-{corpus}-{key}.json",
    "zeroshot": "{root}/{model}/evals/{run}/zeroshot-{key}.json",
    "iou": "{root}/{model}/evals/{run}/iou-{dataset}-{key}.json",
    "inference": "{root}/{model}/evals/{run}/inference-{key}.json",
    # stage 5: the report
    "results_csv": "{root}/results.csv",
    "tables": "{root}/tables.md",
    "plots_dir": "{root}/plots",
    "plot": "{root}/plots/{name}.{ext}",
    # logs and Snakemake benchmarks, one per job
    "log": "{root}/{model}/logs/{job}.log",
    "benchmark": "{root}/{model}/benchmarks/{job}.tsv",
    "global_log": "{root}/logs/{job}.log",
}

# the folder name of the dense model where a run name is expected (evaluations of the dense model)
DENSE = "dense"


def path(kind: str, root: str = ROOT, **fields: Any) -> str:
    """The file `kind` (a key of TEMPLATES) with its wildcards filled in."""
    return TEMPLATES[kind].format(root=root, **fields)


def pattern(kind: str, root: str = ROOT) -> str:
    """The template with only the results root filled in: a rule's output pattern."""
    return TEMPLATES[kind].replace("{root}", root)


def log(job: str, root: str = ROOT) -> str:
    """A job's log pattern under its model (`job` may hold wildcards: 'runs/{run}/step-{group}')."""
    return TEMPLATES["log"].format(root=root, model="{model}", job=job)


def benchmark(job: str, root: str = ROOT) -> str:
    """A job's Snakemake benchmark file under its model."""
    return TEMPLATES["benchmark"].format(root=root, model="{model}", job=job)


def global_log(job: str, root: str = ROOT) -> str:
    """The log of a job that belongs to no model (tables, plots, shared task files)."""
    return TEMPLATES["global_log"].format(root=root, job=job)


def short_hash(data: Any, length: int = 8) -> str:
    """Stable hash of JSON-able data (keys sorted), used in output paths."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:length]


def block_groups(num_blocks: int, blocks_per_step: int | str) -> list[range]:
    """Consecutive block ranges, one per pruning step (a `group` of the step files); "all" makes
    the whole model one step."""
    size = num_blocks if blocks_per_step == "all" else max(1, int(blocks_per_step))
    return [range(start, min(start + size, num_blocks)) for start in range(0, num_blocks, size)]


# ---- run names --------------------------------------------------------------------------------------

STAGE_SEPARATOR = "+"
# a pruning run's name: no '+' (what a stage's name appends starts with one)
RUN_NAME = r"[A-Za-z0-9_.\-]+"
RUN_WITH_STAGES = r"[A-Za-z0-9_.\-]+(?:\+[a-z]+-[0-9a-f]{8})*"


def stage_run(run: str, stage: str, digest: str) -> str:
    """The name of `run` followed by `stage` with settings hash `digest`."""
    return f"{run}{STAGE_SEPARATOR}{stage}-{digest}"


def split_run(run: str) -> tuple[str, list[tuple[str, str]]]:
    """(the pruning run, [(stage, hash), ...]) of a run name."""
    base, *stages = run.split(STAGE_SEPARATOR)
    out = []
    for item in stages:
        stage, _, digest = item.rpartition("-")
        out.append((stage, digest))
    return base, out


def run_hash(run: str) -> str | None:
    """The hash that ends a run's name (the last stage's, or the pruning run's); None for the dense model."""
    return None if run == DENSE else run.rsplit("-", 1)[-1]


def model_dir(model: str, run: str, root: str = ROOT) -> str:
    """The directory of a run's final model (the dense model's for run 'dense')."""
    return path("dense_dir", root, model=model) if run == DENSE else path("run_dir", root, model=model, run=run)


# ---- sources -----------------------------------------------------------------------------------------


def is_sam_source(source: str) -> bool:
    """Official SAM checkpoints (.pth) and SAMs saved by icp.train_sam (.sam.safetensors)."""
    return source.endswith((".pth", ".sam.safetensors"))


# keys that become folder names under results/: no separators, no "." or ".." (nothing escapes results/)
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")

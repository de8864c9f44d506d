"""Zero-shot accuracy through EleutherAI's lm-evaluation-harness (the library itself).

The paper's seven tasks are lm-eval's hub tasks (boolq, rte, hellaswag, winogrande, arc_easy,
arc_challenge, openbookqa). Local tasks (a folder of lm-eval task YAMLs with local data files)
run with no network. Each task reports one metric, `acc` unless the config says otherwise.
`shared_context: true` scores the choices of an item on one pass over its context
(`icp.evaluate.shared_context`); off, lm-eval's own `HFLM` runs unchanged.
"""

from __future__ import annotations

import os
from typing import Any

PAPER_TASKS = ("boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")


def evaluate_tasks(model_dir: str, settings: dict[str, Any], device: str, dtype: str = "float32",
                   task_dir: str | None = None) -> dict[str, Any]:
    """Run lm-eval on a saved model; returns per-task {metric, value, stderr, n, version} and their mean."""
    from ..models.loading import load_model

    model, tokenizer = load_model(model_dir, dtype)
    return evaluate_model(model, tokenizer, settings, device, task_dir)


def evaluate_model(model, tokenizer, settings: dict[str, Any], device: str, task_dir: str | None = None) -> dict[str, Any]:
    """`evaluate_tasks` on a model object already in memory."""
    if settings.get("offline", False):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    model.to(device)
    tasks: dict[str, dict[str, Any]] = {name: (cfg or {}) for name, cfg in settings["tasks"].items()}
    lm_class = HFLM
    if settings.get("shared_context", False):  # the same log-likelihoods, each shared context scored once
        from .shared_context import SharedContextLM as lm_class
    lm = lm_class(pretrained=model, tokenizer=tokenizer, batch_size=int(settings.get("batch_size", 8)), device=device)
    local = set((settings.get("local_tasks") or {}).get("names", []))
    # indexing lm-eval's hundreds of built-in tasks costs seconds per model: skip it when every task is local
    only_local = bool(task_dir) and set(tasks) <= local
    manager = TaskManager(include_path=task_dir, include_defaults=not only_local) if task_dir else TaskManager()
    output = lm_eval.simple_evaluate(
        model=lm, tasks=list(tasks), task_manager=manager, num_fewshot=0,
        limit=settings.get("limit"), random_seed=0, numpy_random_seed=0, torch_random_seed=0,
        fewshot_random_seed=0, log_samples=False,
    )
    results = {}
    for name, cfg in tasks.items():
        metric = cfg.get("metric", "acc")
        task_result = output["results"][name]
        key = f"{metric},none"
        if key not in task_result:
            raise KeyError(f"lm-eval gave no {metric!r} for task {name!r}; it has {sorted(task_result)}")
        results[name] = {
            "metric": metric,
            "value": float(task_result[key]),
            "stderr": task_result.get(f"{metric}_stderr,none"),
            "n": int(output.get("n-samples", {}).get(name, {}).get("effective", 0)),
            "version": output.get("versions", {}).get(name),
        }
    mean = sum(r["value"] for r in results.values()) / len(results)
    return {"metric": "zeroshot", "tasks": results, "mean": mean, "limit": settings.get("limit"),
            "batch_size": int(settings.get("batch_size", 8)), "shared_context": bool(settings.get("shared_context", False)),
            "lm_eval_version": lm_eval.__version__}

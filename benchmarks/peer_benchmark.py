"""Ours beside vLLM's llm-compressor: SparseGPT and Wanda on the same random model, same tokens, same GPU.

    python benchmarks/peer_benchmark.py --models opt-6.7b llama-2-7b --blocks 8
    python benchmarks/peer_benchmark.py --models tiny-opt --nsamples 4 --seqlen 64   # a CPU smoke run

Each case runs in its own process (so that peak host memory, `ru_maxrss`, is the case's own):
the model is built from its shape's config with `--blocks` decoder blocks and weights drawn with
seed 0 (fp16, drawn on the GPU where there is one, then moved to the CPU), the calibration tokens are drawn with seed 1; both tools get the
same model and the same [nsamples, seqlen] token tensor. Cases:

- ours, streams on the GPU (`icp.prune`, the default) and streams in host memory
  (`offload_streams=True`, what llm-compressor's sequential pipeline does with activations);
  `track_error=False` (llm-compressor does not carry the dense stream either);
- vLLM's llm-compressor `oneshot(..., pipeline="sequential")` with `SparseGPTModifier` (block 128,
  dampening `--percdamp`, 0.01 by default, as ours) or `WandaPruningModifier`, lm_head ignored, batch size 1 (its default).

Reported per case: wall time of the pruning call (model already built, on the CPU), peak GPU memory
(`torch.cuda.max_memory_allocated`), peak host memory of the process, the sparsity reached, and
the pruned model's relative output error on two held-out windows (last hidden states against the
dense model's): both tools should have done the same job.
A case that fails records its error instead. Writes benchmarks/results/peer_benchmark_<gpu>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

SHAPES = {
    "opt-6.7b": ("opt", dict(hidden_size=4096, ffn_dim=16384, num_attention_heads=32, word_embed_proj_dim=4096,
                             max_position_embeddings=2048, vocab_size=50272)),
    "llama-2-7b": ("llama", dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32,
                                 num_key_value_heads=32, max_position_embeddings=4096, vocab_size=32000)),
    "tiny-opt": ("opt", dict(hidden_size=64, ffn_dim=256, num_attention_heads=4, word_embed_proj_dim=64,
                             max_position_embeddings=256, vocab_size=500)),
    "tiny-llama": ("llama", dict(hidden_size=64, intermediate_size=176, num_attention_heads=4,
                                 num_key_value_heads=4, max_position_embeddings=256, vocab_size=500)),
}
CASES = ["ours", "ours-offload", "llm-compressor"]


def build_model(shape: str, blocks: int, device: str):
    """The shape's model with random weights, drawn on `device` (a 7B shape's draw takes minutes
    on the CPU) and handed back on the CPU, where both tools expect it."""
    from transformers import AutoModelForCausalLM, LlamaConfig, OPTConfig

    family, fields = SHAPES[shape]
    config = (OPTConfig if family == "opt" else LlamaConfig)(num_hidden_layers=blocks, **fields)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float16)
        for p in model.parameters():  # random weights of the trained models' scale
            if p.dim() == 2:
                p.data.normal_(0, 0.02)
    return model.to("cpu").eval()


def sparsity_of(model) -> float:
    zeros = total = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and "lm_head" not in name:
            zeros += int((module.weight == 0).sum())
            total += module.weight.numel()
    return zeros / total


@torch.no_grad()
def last_hidden(model, tokens: torch.Tensor, device: str) -> torch.Tensor:
    """The base model's last hidden states on `tokens`, one window at a time, back on the CPU."""
    model.to(device)
    out = torch.cat([model.base_model(input_ids=row[None].to(device)).last_hidden_state.float().cpu() for row in tokens])
    model.to("cpu")
    return out


def run_ours(model, tokens, method: str, sparsity: float, device: str, offload: bool, percdamp: float) -> None:
    import icp

    icp.prune(model, tokens, method=method, sparsity=sparsity, device=device, offload_streams=offload,
              track_error=False, batch_size=8,
              method_options={"blocksize": 128, "percdamp": percdamp} if method == "sparsegpt" else None)


def placeholder_tokenizer():
    """oneshot asks for a processor even when the data come pre-tokenized; this one is never used."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    inner = Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=inner, unk_token="<unk>", pad_token="<unk>")


def run_llm_compressor(model, tokens, method: str, sparsity: float, percdamp: float) -> None:
    from llmcompressor import oneshot
    from llmcompressor.modifiers.pruning import SparseGPTModifier, WandaPruningModifier

    if method == "sparsegpt":
        recipe = SparseGPTModifier(sparsity=sparsity, block_size=128, dampening_frac=percdamp, targets=["Linear"],
                                   ignore=["re:.*lm_head"])
    else:
        recipe = WandaPruningModifier(sparsity=sparsity, targets=["Linear"], ignore=["re:.*lm_head"])
    import tempfile

    where = tempfile.mkdtemp()  # oneshot re-reads the model's config from model.config.name_or_path
    model.config.save_pretrained(where)
    model.config.name_or_path = where
    loader = torch.utils.data.DataLoader([{"input_ids": row, "attention_mask": torch.ones_like(row)} for row in tokens],
                                         batch_size=1)
    oneshot(model=model, processor=placeholder_tokenizer(), dataset=loader, recipe=recipe, pipeline="sequential", num_calibration_samples=len(tokens),
            max_seq_length=tokens.shape[1])


def one_case(args) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    row = {"case": args.case, "model": args.models[0], "method": args.methods[0], "blocks": args.blocks,
           "nsamples": args.nsamples, "seqlen": args.seqlen, "sparsity": args.sparsity}
    if args.methods[0] == "sparsegpt":
        row["percdamp"] = args.percdamp
    started = time.perf_counter()
    model = build_model(args.models[0], args.blocks, device)
    torch.manual_seed(1)
    tokens = torch.randint(0, model.config.vocab_size, (args.nsamples, args.seqlen))
    torch.manual_seed(2)
    held_out = torch.randint(0, model.config.vocab_size, (2, args.seqlen))
    dense = last_hidden(model, held_out, device)
    row["build_s"] = time.perf_counter() - started
    if device == "cuda":
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    try:
        if args.case == "llm-compressor":
            run_llm_compressor(model, tokens, args.methods[0], args.sparsity, args.percdamp)
        else:
            run_ours(model, tokens, args.methods[0], args.sparsity, device, args.case == "ours-offload", args.percdamp)
        if device == "cuda":
            torch.cuda.synchronize()
        row["seconds"] = time.perf_counter() - started
        # the pruning call's own peak: the held-out pass below moves the whole model to the GPU
        row["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
        row["sparsity_reached"] = sparsity_of(model)
        try:  # the pruned model's output error on held-out windows: both tools did the same job
            pruned = last_hidden(model, held_out, device)
            row["held_out_rel_mse"] = float((pruned - dense).pow(2).mean() / dense.pow(2).mean())
        except Exception as err:
            row["held_out_rel_mse"] = f"not measured ({type(err).__name__}: {err})"
    except Exception as err:  # recorded, not raised: the other cases still run
        row["error"] = f"{type(err).__name__}: {err}"
        row["traceback"] = traceback.format_exc(limit=-6)
    if "peak_gpu_gib" not in row:  # the call failed: its peak up to the failure (an out-of-memory, say)
        row["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    row["peak_host_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return row


def versions() -> dict:
    out = {"torch": torch.__version__, "python": platform.python_version(), "host": platform.node()}
    for name in ("transformers", "llmcompressor", "compressed_tensors"):
        try:
            out[name] = __import__(name).__version__
        except Exception as err:
            out[name] = f"not importable ({type(err).__name__})"
    out["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["opt-6.7b", "llama-2-7b"], choices=list(SHAPES))
    parser.add_argument("--methods", nargs="+", default=["sparsegpt", "wanda"], choices=["sparsegpt", "wanda"])
    parser.add_argument("--cases", nargs="+", default=CASES, choices=CASES)
    parser.add_argument("--blocks", type=int, default=8, help="decoder blocks of the built model")
    parser.add_argument("--nsamples", type=int, default=128)
    parser.add_argument("--seqlen", type=int, default=2048)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--percdamp", type=float, default=0.01,
                        help="SparseGPT's dampening, a fraction of the Hessian's mean diagonal, for both tools")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--tag", default="", help="appended to the result file's name: peer_benchmark_<gpu>_<tag>.json")
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)  # one case, in this process
    args = parser.parse_args()
    if args.case:
        print("ROW " + json.dumps(one_case(args)), flush=True)
        return
    info = versions()
    slug = info["gpu"].lower().replace("nvidia", "").split()[0] if info["gpu"] != "cpu" else "cpu"
    path = args.out / f"peer_benchmark_{slug}{'_' + args.tag if args.tag else ''}.json"
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for model in args.models:
        for method in args.methods:
            for case in args.cases:
                cmd = [sys.executable, __file__, "--case", case, "--models", model, "--methods", method,
                       "--blocks", str(args.blocks), "--nsamples", str(args.nsamples), "--seqlen", str(args.seqlen),
                       "--sparsity", str(args.sparsity), "--percdamp", str(args.percdamp)]
                done = subprocess.run(cmd, capture_output=True, text=True)
                lines = [line for line in done.stdout.splitlines() if line.startswith("ROW ")]
                row = json.loads(lines[-1][4:]) if lines else {
                    "case": case, "model": model, "method": method, "error": f"exit {done.returncode}",
                    "stderr_tail": done.stderr[-2000:]}
                if "seconds" in row:
                    print(f"{model} {method} {case}: {row['seconds']:.1f}s, GPU {row['peak_gpu_gib'] or 0:.2f} GiB, "
                          f"host {row['peak_host_gib']:.1f} GiB, sparsity {row['sparsity_reached']:.4f}, "
                          f"held-out rel. MSE {row['held_out_rel_mse']}", flush=True)
                else:
                    print(f"{model} {method} {case}: FAILED {row.get('error')}\n{row.get('traceback') or row.get('stderr_tail', '')}",
                          flush=True)
                rows.append(row)
                path.write_text(json.dumps({"versions": info, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()

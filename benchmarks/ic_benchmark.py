"""Input compensation's cost at the paper's scale: one training epoch on a randomly initialised
Llama-2-7B-shaped model (weights' values do not change the cost), 128 x 2048 tokens, on one GPU.

    python benchmarks/ic_benchmark.py --samples 128 --out benchmarks/results

The pruned model lives on the GPU in bf16 with every weight frozen; each block is checkpointed
(only the block boundaries of one sample are kept for the backward pass); the dense targets stay
in host memory. Reports seconds per epoch (the timed samples scaled to 128), peak GPU memory, and
the same with checkpointing off where it fits, side by side in one run.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from icp.methods.input_compensation import train_input_compensation
from icp.models import adapter_for
from icp.spec import InputCompensationSettings

SHAPES = {
    "llama-2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=32, vocab_size=32000),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=4, vocab_size=128),
}


def one_epoch(model, tokens, targets, checkpoint_blocks: bool, log) -> dict:
    settings = InputCompensationSettings(epochs=1, checkpoint_blocks=checkpoint_blocks)
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    started = time.perf_counter()
    _, record = train_input_compensation(model, adapter_for("llama"), tokens, targets, settings, "cuda", log=log)
    torch.cuda.synchronize()
    return {"seconds": time.perf_counter() - started, "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30,
            "loss": record["epoch_loss"][0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="llama-2-7b", choices=list(SHAPES))
    parser.add_argument("--samples", type=int, default=128, help="samples timed (the epoch is scaled to --epoch-samples)")
    parser.add_argument("--epoch-samples", type=int, default=128)
    parser.add_argument("--seqlen", type=int, default=2048)
    parser.add_argument("--plain", action="store_true", help="also time without activation checkpointing")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()

    config = LlamaConfig(**SHAPES[args.shape], max_position_embeddings=args.seqlen)
    config._attn_implementation = "sdpa"
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16).eval()  # random weights, built on the GPU
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, config.vocab_size, (args.samples, args.seqlen), generator=generator)
    targets = torch.randn(args.samples, args.seqlen, config.hidden_size, generator=generator).to(torch.bfloat16)
    weights_gib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
    print(f"{args.shape}: {weights_gib:.2f} GiB of bf16 weights on {torch.cuda.get_device_name(0)}", flush=True)
    # warm-up: kernels compiled and the allocator grown outside the timed epoch
    one_epoch(model, tokens[:2], targets[:2], True, log=lambda s: None)
    rows = {}
    for name, checkpointed in (("checkpointed", True), *((("plain", False),) if args.plain else ())):
        try:
            result = one_epoch(model, tokens, targets, checkpointed, log=print)
        except torch.OutOfMemoryError as err:
            rows[name] = {"failed": f"out of memory: {str(err).splitlines()[0]}"}
            torch.cuda.empty_cache()
            continue
        result["seconds_per_epoch"] = result["seconds"] * args.epoch_samples / args.samples
        rows[name] = result
        print(name, json.dumps(result), flush=True)
    out = {
        "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "host": platform.node(),
        "shape": args.shape, "weights_gib": weights_gib, "samples_timed": args.samples,
        "epoch_samples": args.epoch_samples, "seqlen": args.seqlen, "dtype": "bfloat16 weights, bf16 autocast",
        "targets": "seconds_per_epoch <= 40, peak_gpu_gib <= 24", "results": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    slug = torch.cuda.get_device_name(0).lower().replace("nvidia", "").strip().split()[0]
    path = args.out / f"ic_benchmark_{slug}.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""Input compensation's cost at the paper's scale: one training epoch on a randomly initialised
Llama-2-7B-shaped model (weights' values do not change the cost), 128 x 2048 tokens, on one GPU.

    python benchmarks/ic_benchmark.py --samples 128 --out benchmarks/results
    python benchmarks/ic_benchmark.py --shape smollm2-135m --seqlen 512 --fused   # small-model launches

The pruned model lives on the GPU in bf16 with every weight frozen; each block is checkpointed
(only the block boundaries of one sample are kept for the backward pass); the dense targets stay
in host memory. Reports seconds per epoch (the timed samples scaled to 128), peak GPU memory, and
the same with checkpointing off where it fits, side by side in one run. With --fused (for small
models, whose epochs kernel launches bound) it times instead, side by side, the paper's batch 1 with
gradient accumulation 2 against batch 2 without accumulation (the same optimizer steps, half the
forwards), both without checkpointing, as the offline-GPU config runs IC.
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
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=4, vocab_size=128),
}


def one_epoch(model, tokens, targets, checkpoint_blocks: bool, log, batch_size: int = 1, accumulation: int = 2,
              device: str = "cuda") -> dict:
    settings = InputCompensationSettings(epochs=1, checkpoint_blocks=checkpoint_blocks, batch_size=batch_size,
                                         accumulation=accumulation)
    on_gpu = device == "cuda"
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    started = time.perf_counter()
    pool, record = train_input_compensation(model, adapter_for("llama"), tokens, targets, settings, device, log=log)
    if on_gpu:
        torch.cuda.synchronize()
    return {"seconds": time.perf_counter() - started,
            "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if on_gpu else None,
            "loss": record["epoch_loss"][0], "pool": pool}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="llama-2-7b", choices=list(SHAPES))
    parser.add_argument("--samples", type=int, default=128, help="samples timed (the epoch is scaled to --epoch-samples)")
    parser.add_argument("--epoch-samples", type=int, default=128)
    parser.add_argument("--seqlen", type=int, default=2048)
    parser.add_argument("--plain", action="store_true", help="also time without activation checkpointing")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"],
                        help="the frozen weights' dtype (bf16 autocast either way; the offline-GPU config loads fp32)")
    parser.add_argument("--repeats", type=int, default=1, help="time each case this many times, interleaved; min kept")
    parser.add_argument("--fused", action="store_true",
                        help="time batch 1 x accumulation 2 against batch 2 x accumulation 1, no checkpointing")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: a smoke run of the script only")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else f"cpu ({platform.processor() or 'cpu'})"

    config = LlamaConfig(**SHAPES[args.shape], max_position_embeddings=args.seqlen)
    config._attn_implementation = "sdpa"
    with torch.device(args.device):
        model = LlamaForCausalLM(config).to(getattr(torch, args.dtype)).eval()  # random weights, built in place
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, config.vocab_size, (args.samples, args.seqlen), generator=generator)
    targets = torch.randn(args.samples, args.seqlen, config.hidden_size, generator=generator).to(torch.bfloat16)
    weights_gib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
    print(f"{args.shape}: {weights_gib:.2f} GiB of {args.dtype} weights on {device_name}", flush=True)
    if args.fused:
        cases = [("batch1-accumulation2", False, 1, 2), ("batch2-accumulation1", False, 2, 1)]
    else:
        cases = [("checkpointed", True, 1, 2), *((("plain", False, 1, 2),) if args.plain else ())]
    # warm-up: kernels compiled and the allocator grown outside the timed epochs
    for _, checkpointed, batch_size, accumulation in cases:
        one_epoch(model, tokens[:4], targets[:4], checkpointed, lambda s: None, batch_size, accumulation, args.device)
    rows, pools = {}, {}
    for repeat in range(args.repeats):
        for name, checkpointed, batch_size, accumulation in cases:
            if "failed" in rows.get(name, {}):
                continue
            try:
                result = one_epoch(model, tokens, targets, checkpointed, print, batch_size, accumulation, args.device)
            except torch.OutOfMemoryError as err:
                rows[name] = {"failed": f"out of memory: {str(err).splitlines()[0]}"}
                torch.cuda.empty_cache()
                continue
            pools.setdefault(name, result.pop("pool"))
            result["seconds_per_epoch"] = result["seconds"] * args.epoch_samples / args.samples
            print(name, json.dumps(result), flush=True)
            runs = rows.get(name, {}).get("seconds_per_epoch_each", []) + [result["seconds_per_epoch"]]
            if not rows.get(name) or result["seconds_per_epoch"] < rows[name]["seconds_per_epoch"]:
                rows[name] = result
            rows[name]["seconds_per_epoch_each"] = runs
    if len(pools) == 2:  # the same steps either way: the trained pools agree up to rounding
        a, b = pools.values()
        rows["pool_max_abs_difference"] = max(float((a.key - b.key).detach().abs().max()), float((a.value - b.value).detach().abs().max()))
        rows["pool_max_abs"] = max(float(a.key.detach().abs().max()), float(a.value.detach().abs().max()))
    out = {
        "gpu": device_name, "torch": torch.__version__, "host": platform.node(),
        "shape": args.shape, "weights_gib": weights_gib, "samples_timed": args.samples,
        "epoch_samples": args.epoch_samples, "seqlen": args.seqlen, "dtype": f"{args.dtype} weights, bf16 autocast",
        "repeats": args.repeats, "results": rows,
        **({"targets": "seconds_per_epoch <= 40, peak_gpu_gib <= 24"} if args.shape == "llama-2-7b" else {}),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    slug = device_name.lower().replace("nvidia", "").strip().split()[0]
    suffix = "" if args.shape == "llama-2-7b" and not args.fused else f"_{args.shape}" + ("_fused" if args.fused else "")
    path = args.out / f"ic_benchmark_{slug}{suffix}.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

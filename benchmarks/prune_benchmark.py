"""Time and peak accelerator memory of ICP, SparseGPT and Wanda on randomly initialised models
shaped like OPT-125M / 1.3B / 6.7B, Llama-2-7B and SAM ViT-B/L/H (weight values do not change the cost).

    python benchmarks/prune_benchmark.py --models opt-125m opt-6.7b --methods icp sparsegpt wanda
    python benchmarks/prune_benchmark.py --models sam-vit-b sam-vit-h --nsamples 64

Calibration for language models is the paper's: 128 windows of 2048 tokens; SAM blocks see
`nsamples` images at 1024 x 1024 (a 64 x 64 grid of patch tokens). Blocks are generated on the fly instead of
read from a checkpoint, so nothing but one block at a time ever exists. Writes a Markdown table
and a JSON of every measurement.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time

import torch
from transformers import LlamaConfig, OPTConfig

from icp.engine import BlockRunner, Streams, run_step
from icp.models import adapter_for
from icp.models.sam import SamConfig
from icp.runs import RunSpec, make_plan

SHAPES = {
    "opt-125m": OPTConfig(hidden_size=768, ffn_dim=3072, num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=2048),
    "opt-1.3b": OPTConfig(hidden_size=2048, ffn_dim=8192, num_hidden_layers=24, num_attention_heads=32, max_position_embeddings=2048),
    "opt-6.7b": OPTConfig(hidden_size=4096, ffn_dim=16384, num_hidden_layers=32, num_attention_heads=32, max_position_embeddings=2048),
    "llama-2-7b": LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                              num_key_value_heads=32, max_position_embeddings=4096),
    "sam-vit-b": SamConfig.for_variant("vit_b"),
    "sam-vit-l": SamConfig.for_variant("vit_l"),
    "sam-vit-h": SamConfig.for_variant("vit_h"),
}


def stream_shape(config, nsamples: int, seqlen: int) -> tuple[int, ...]:
    if isinstance(config, SamConfig):
        return (nsamples, config.grid_size, config.grid_size, config.embed_dim)
    return (nsamples, seqlen, config.hidden_size)


class RandomBlocks:
    """Stands in for a checkpoint reader: every block gets its own drawn weights (seeded by index),
    drawn once into host memory before the clock starts, as a checkpoint in the page cache is."""

    def __init__(self, adapter, config, dtype):
        self.adapter, self.config, self.dtype = adapter, config, dtype
        self.cache: dict[int, dict[str, torch.Tensor]] = {}

    def prepare(self, indices) -> None:
        for index in indices:
            self.cache[index] = self._draw(index)

    def read_prefix(self, prefix: str) -> dict[str, torch.Tensor]:
        index = int(prefix.rstrip(".").split(".")[-1])
        return self.cache[index] if index in self.cache else self._draw(index)

    def _draw(self, index: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(index)
        with torch.device("cuda"):
            block = self.adapter.build_block(self.config, index)
        for p in block.parameters():
            if p.dim() == 2:
                p.data.normal_(0, 0.02)
        return {k: v.to(self.dtype).cpu() for k, v in block.state_dict().items()}


# SparseGPT options of each benchmark path: torch (the plain sweep), auto (the default: the fused
# sweep on CUDA), triton (fused, required), lazy (auto + the opt-in lazy update groups of 1024
# columns), flip (auto + the opt-in one-factorisation inverse).
SWEEP_PATHS = {"torch": {"kernel": "torch"}, "auto": {"kernel": "auto"}, "triton": {"kernel": "triton"},
               "lazy": {"kernel": "auto", "lazy_columns": 1024}, "flip": {"kernel": "auto", "flip_factor": True}}


def sweep_options(path: str) -> dict:
    return dict(SWEEP_PATHS[path])


def prepare(name: str, method: str, nsamples: int, seqlen: int, dtype: torch.dtype, max_blocks: int | None,
            offload: bool = False, compensation_batch: int = 8, kernel: str = "auto", extra_steps: int = 0):
    """A benchmark run up to its first timed block: the runner and plan of the shape and method, the
    random blocks drawn (for the timed steps and `extra_steps` after them), the calibration streams,
    and block 0 run once untimed (kernel compilation, library handles). Returns (runner, plan,
    streams, blocks to time)."""
    config = SHAPES[name]
    config._attn_implementation = "sdpa"
    adapter = adapter_for(config.model_type)
    reader = RandomBlocks(adapter, config, dtype)
    runner = BlockRunner(adapter, config, reader, "cuda", dtype, seqlen, batch_size=8)
    spec = RunSpec(method, sparsity=0.5, alpha=0.8 if method == "icp" else 1.0, beta=0.9 if method == "icp" else 1.0,
                   compensation={"epochs": 1, "lr": 1e-5, "batch_size": compensation_batch} if method == "icp" else {},
                   method_options=sweep_options(kernel) if method in ("sparsegpt", "icp") else {},
                   track_error=False)
    plan = make_plan(spec, runner)
    blocks = min(runner.num_blocks, max_blocks or runner.num_blocks)
    # every block the timed steps touch, and the one read ahead after it: ICP loads block i+1 at
    # step i and the runner reads one further ahead, so i+2 (a block drawn inside the clock would
    # add a GPU draw and a pageable copy to the time)
    reader.prepare(range(min(blocks + extra_steps + 2, runner.num_blocks)))
    torch.manual_seed(0)
    x0 = torch.randn(stream_shape(config, nsamples, seqlen), dtype=dtype, device="cuda")
    if offload:  # streams in host memory, one batch at a time on the GPU
        x0 = x0.cpu().pin_memory()
    streams = Streams(x0, x0 if plan.compensation else None)
    run_step(runner, 0, streams, None, plan)  # warm-up
    torch.cuda.synchronize()
    return runner, plan, streams, blocks


def bench(name: str, method: str, nsamples: int, seqlen: int, dtype: torch.dtype, max_blocks: int | None,
          offload: bool = False, compensation_batch: int = 8, kernel: str = "auto", consume: bool = True) -> dict:
    config = SHAPES[name]
    runner, plan, streams, blocks = prepare(name, method, nsamples, seqlen, dtype, max_blocks, offload,
                                            compensation_batch, kernel)
    pending = None
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    started = time.perf_counter()
    per_block = []
    for index in range(blocks):
        t = time.perf_counter()
        result = run_step(runner, index, streams, pending, plan, consume=consume)  # True: as the pipeline's jobs run it
        streams, pending = result.streams, result.pending
        torch.cuda.synchronize()
        per_block.append(time.perf_counter() - t)
    seconds = time.perf_counter() - started
    total_blocks = runner.num_blocks
    return {
        "model": name, "method": method, "blocks_run": blocks, "blocks": total_blocks,
        "seconds": seconds, "seconds_full_model": seconds / blocks * total_blocks,
        "median_block_s": sorted(per_block)[len(per_block) // 2],
        "per_block_s": per_block,  # each timed step (the device synchronised after it), in order
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
        "streams_gib": base / 2**30,
        "path": kernel if method in ("sparsegpt", "icp") else "-",
        "streams": "consumed" if consume else "kept",
        "nsamples": nsamples, "seqlen": None if isinstance(config, SamConfig) else seqlen, "dtype": str(dtype), "offload_streams": offload,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=list(SHAPES))
    parser.add_argument("--methods", nargs="+", default=["wanda", "sparsegpt", "icp"])
    parser.add_argument("--nsamples", type=int, default=128)
    parser.add_argument("--seqlen", type=int, default=2048)
    parser.add_argument("--max-blocks", type=int, default=None, help="time only this many blocks, extrapolate")
    parser.add_argument("--offload", action="store_true", help="keep the hidden-state streams in host memory")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--tag", default="", help="suffix of the output file names")
    parser.add_argument("--compensation-batch", type=int, default=8, help="ICP samples per compensation step")
    parser.add_argument("--paths", nargs="+", default=["torch", "auto"],
                        choices=list(SWEEP_PATHS),
                        help="SparseGPT paths to compare (SWEEP_PATHS): torch, auto (the default), triton, lazy, flip")
    parser.add_argument("--streams", nargs="+", default=["consumed"], choices=["consumed", "kept"],
                        help="consumed: each step takes its input streams over, as the pipeline's jobs run (the "
                             "default); kept: the caller keeps them alive through the step (the code before)")
    args = parser.parse_args()
    rows = []
    for name in args.models:
        for method in args.methods:
            for kernel, streams in itertools.product(args.paths if method in ("sparsegpt", "icp") else ["auto"],
                                                     args.streams):
                row = bench(name, method, args.nsamples, args.seqlen, torch.float16, args.max_blocks, args.offload,
                            args.compensation_batch, kernel, consume=streams == "consumed")
                row["compensation_batch"] = args.compensation_batch
                row["gpu"] = torch.cuda.get_device_name()
                rows.append(row)
                print(json.dumps(row), flush=True)
                torch.cuda.empty_cache()
    from pathlib import Path

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = ("_offload" if args.offload else "") + (f"_{args.tag}" if args.tag else "")
    (out / f"prune_benchmark{suffix}.json").write_text(json.dumps(rows, indent=1))
    lines = ["| model | method | SparseGPT sweep | input streams | time (s, whole model) | median s/block | peak GPU memory (GiB) | of which streams |",
             "|---|---|---|---|---|---|---|---|"]
    names = {"torch": "plain (torch)", "auto": "fused (Triton)", "triton": "fused (Triton)",
             "lazy": "fused + lazy groups (opt-in)", "flip": "fused + flip factor (opt-in)", "-": "-"}
    for r in rows:
        lines.append(f"| {r['model']} | {r['method']} | {names[r['path']]} | {r['streams']} | {r['seconds_full_model']:.0f} | "
                     f"{r['median_block_s']:.2f} | {r['peak_gib']:.2f} | {r['streams_gib']:.2f} |")
    inputs = "1024 x 1024 image" if args.models[0].startswith("sam") else f"{args.seqlen}-token window"
    lines.append(f"\nBlock 0 is run once untimed first (kernel compilation, library handles); then {rows[0]['blocks_run']} blocks timed, scaled to the whole model.")
    lines.append(f"\n{rows[0]['gpu']}, {platform.node()}, torch {torch.__version__}, {args.nsamples} x {inputs} calibration inputs, fp16, ICP compensation batch {args.compensation_batch}, streams {'in host memory' if args.offload else 'on the GPU'}")
    (out / f"prune_benchmark{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

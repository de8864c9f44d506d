"""What 2:4 buys at inference, by model shape: randomly initialised Llama-architecture models whose
block linears are pruned 2:4 (magnitude), timed with the workflow's own `icp.evaluate.inference`
code (semi-structured sparse linears against the dense model, alternating, medians).

Timings depend on the shapes, not on the weights' values, so a random model of SmolLM2-135M's
shape times what the real one would; the 7B-wide shape (Llama-2-7B's widths, fewer blocks) asks
whether the sparse kernels pay where the linears are wide. `--gemms` times single linears of those
widths instead (dense `F.linear` against the semi-structured one, median of 20 after a warm-up).

    python benchmarks/inference_shapes.py --out benchmarks/results --tag h100
    python benchmarks/inference_shapes.py --gemms --out benchmarks/results --tag h100
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from icp.evaluate.inference import measure, sparsify_linears, unsupported_reason  # noqa: E402
from icp.methods.masks import nm_mask  # noqa: E402

SHAPES = {
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152),
    "llama-2-7b-widths-8-blocks": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=8,
                                       num_attention_heads=32, num_key_value_heads=32, vocab_size=32000),
}


def two_four_model(shape: dict, device: str) -> tuple[torch.nn.Module, torch.nn.Module, dict[str, torch.nn.Linear]]:
    """(dense model, its 2:4 copy, the copy's block linears by module path), fp16 on `device`."""
    import copy

    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**shape, max_position_embeddings=8192, tie_word_embeddings=True)
    with torch.device(device):
        dense = LlamaForCausalLM(config).to(torch.float16).eval()
    sparse = copy.deepcopy(dense)
    linears = {n: m for n, m in sparse.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in n}
    with torch.no_grad():
        for linear in linears.values():  # keep the 2 largest of every 4 consecutive inputs
            linear.weight.masked_fill_(nm_mask(linear.weight.abs(), 2, 4), 0)
    return dense, sparse, linears


def gemm_rows(tokens_list=(16, 2048, 8192), shapes=((11008, 4096), (4096, 11008), (4096, 4096), (1536, 576))) -> list[dict]:
    """One fp16 linear [tokens, in] -> [tokens, out], dense against 2:4 semi-structured."""
    import statistics
    import time

    import torch.nn.functional as F
    from torch.sparse import to_sparse_semi_structured

    def median_ms(fn) -> float:
        fn()
        times = []
        for _ in range(20):
            torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return 1e3 * statistics.median(times)

    rows = []
    for tokens in tokens_list:
        for out_features, in_features in shapes:
            weight = torch.randn(out_features, in_features, device="cuda", dtype=torch.float16)
            weight.view(-1, 4)[:, :2] = 0
            x = torch.randn(tokens, in_features, device="cuda", dtype=torch.float16)
            sparse = to_sparse_semi_structured(weight)
            dense_ms, sparse_ms = median_ms(lambda: F.linear(x, weight)), median_ms(lambda: F.linear(x, sparse))
            rows.append({"tokens": tokens, "out": out_features, "in": in_features, "dense_ms": dense_ms,
                         "sparse_ms": sparse_ms, "speedup": dense_ms / sparse_ms})
            print(f"{tokens:5d} tokens, {out_features}x{in_features}: dense {dense_ms:.3f} ms, "
                  f"2:4 {sparse_ms:.3f} ms ({dense_ms / sparse_ms:.2f}x)", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--decode-steps", type=int, default=32)
    parser.add_argument("--out", default=None)
    parser.add_argument("--tag", default="gpu")
    parser.add_argument("--gemms", action="store_true", help="single linears instead of whole models")
    args = parser.parse_args()
    device = "cuda"
    reason = unsupported_reason(device)
    if reason:
        sys.exit(f"not measured: {reason}")
    if args.gemms:
        out = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "gemms": gemm_rows()}
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / f"inference_gemms_{args.tag}.json").write_text(json.dumps(out, indent=1))
        return
    settings = {"prefill_tokens": [2048, 8192], "decode_batch": [1, 16], "decode_steps": args.decode_steps,
                "repeats": args.repeats}
    rows = {}
    for name in args.shapes:
        dense, sparse, linears = two_four_model(SHAPES[name], device)
        probe = torch.randint(0, SHAPES[name]["vocab_size"], (1, 256), device=device)
        with torch.no_grad():
            reference = sparse(probe).logits.float()
            swapped = sparsify_linears(sparse, linears)
            drift = float((sparse(probe).logits.float() - reference).norm() / reference.norm())
            result = measure(dense, sparse, settings, device, log=print)
        rows[name] = {**result, "shape": SHAPES[name], "sparse_linears": len(swapped), "linears": len(linears),
                      "logits_rel_diff": drift}
        print(name, json.dumps(rows[name]["rows"], indent=1), flush=True)
        del dense, sparse
        torch.cuda.empty_cache()
    out = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "settings": settings, "models": rows}
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / f"inference_shapes_{args.tag}.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

"""What 2:4 sparsity buys at inference: a 2:4-pruned model's linears as PyTorch semi-structured
sparse tensors (cuSPARSELt / CUTLASS kernels) against the dense model, on the same GPU, in one process.

Prefill: tokens per second of one forward pass over `tokens` positions (batch 1, no cache).
Decode: milliseconds per generated token at a batch size, greedy, with the KV cache, after a short
prompt (the prompt's forward included). Both models are timed alternately (dense, sparse, dense, ...) and the median is kept, so
clock and thermal drift fall on both alike. Where the kernels cannot run (no CUDA, a GPU older than
Ampere, a torch without them) the result says "not measured" and why, instead of failing.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn


def unsupported_reason(device: str) -> str | None:
    """Why semi-structured kernels cannot be timed here, or None when they can."""
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return "no CUDA device: PyTorch's semi-structured (2:4) kernels run only on NVIDIA GPUs"
    major, minor = torch.cuda.get_device_capability(torch.device(device))
    if major < 8:
        return f"compute capability {major}.{minor}: 2:4 sparse tensor cores need Ampere (8.0) or newer"
    try:
        from torch.sparse import to_sparse_semi_structured  # noqa: F401
    except ImportError:
        return f"torch {torch.__version__} has no torch.sparse.to_sparse_semi_structured"
    return None


def is_two_four(weight: torch.Tensor) -> bool:
    """Every group of 4 consecutive input weights of every row has at least 2 zeros."""
    from ..methods.masks import check_nm

    return weight.shape[1] % 4 == 0 and check_nm(weight, 2, 4)


class SemiStructuredLinear(nn.Module):
    """A 2:4 linear whose weight is a semi-structured sparse tensor. Its input reaches the kernel as
    one contiguous [tokens, features] matrix, and its output leaves row-major: the sparse tensor
    supports only a few operations (a batched, non-contiguous input sends `F.linear` down a batched
    matmul that needs `expand` on the weight: decode at batch 16 failed so on torch 2.11), and its
    result is a transposed view that made attention fall back to fp32 math (5-8x slower models)."""

    def __init__(self, linear: nn.Linear, to_sparse: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.weight = nn.Parameter(to_sparse(linear.weight.detach()), requires_grad=False)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x.reshape(-1, x.shape[-1]).contiguous(), self.weight, self.bias)
        # the kernel's result is a transposed view; attention kernels downstream need row-major
        # q/k/v (a column-major one sends SDPA to its fp32 math fallback)
        return y.contiguous().view(*x.shape[:-1], y.shape[-1])


def sparsify_linears(model: nn.Module, linears: dict[str, nn.Linear],
                     to_sparse: Callable[[torch.Tensor], torch.Tensor] | None = None) -> list[str]:
    """Replace each 2:4 linear (`linears`: module paths in `model`) by a `SemiStructuredLinear`;
    returns the replaced paths. Linears that are not 2:4 (or whose shapes the kernels reject) stay
    dense. `to_sparse` defaults to `torch.sparse.to_sparse_semi_structured`."""
    if to_sparse is None:
        from torch.sparse import to_sparse_semi_structured as to_sparse

    swapped = []
    for name, linear in linears.items():
        if not is_two_four(linear.weight):
            continue
        try:
            replacement = SemiStructuredLinear(linear, to_sparse)
        except (RuntimeError, ValueError):  # a shape the kernels do not support
            continue
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, replacement)
        swapped.append(name)
    return swapped


def _seconds(fn: Callable[[], Any]) -> float:
    """Wall time of one call, the GPU's queue drained before and after."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


@torch.no_grad()
def _prefill(model: nn.Module, tokens: int, vocab: int, device: str) -> Callable[[], Any]:
    ids = torch.randint(0, vocab, (1, tokens), device=device, generator=torch.Generator(device).manual_seed(0))
    return lambda: model(ids, use_cache=False, logits_to_keep=1)


@torch.no_grad()
def _decode(model: nn.Module, batch: int, steps: int, vocab: int, device: str) -> Callable[[], Any]:
    """Greedy decoding with the KV cache, written out (a 16-token prompt, then `steps` single tokens)."""
    prompt = torch.randint(0, vocab, (batch, 16), device=device, generator=torch.Generator(device).manual_seed(1))

    def run() -> None:
        out = model(prompt, use_cache=True, logits_to_keep=1)
        for _ in range(steps):
            token = out.logits[:, -1:].argmax(dim=-1)
            out = model(token, past_key_values=out.past_key_values, use_cache=True, logits_to_keep=1)

    return run


def measure(dense: nn.Module, sparse: nn.Module, settings: dict[str, Any], device: str, log=print) -> dict[str, Any]:
    """Side-by-side timings of two models already on `device` (the second with sparse linears)."""
    vocab = dense.config.vocab_size
    repeats = int(settings.get("repeats", 5))
    rows = []
    cases = [("prefill", int(t), 1) for t in settings.get("prefill_tokens", [2048, 8192])]
    cases += [("decode", int(settings.get("decode_steps", 64)), int(b)) for b in settings.get("decode_batch", [1, 16])]
    for kind, tokens, batch in cases:
        make = (lambda m: _prefill(m, tokens, vocab, device)) if kind == "prefill" else \
            (lambda m: _decode(m, batch, tokens, vocab, device))
        runs = {"dense": make(dense), "sparse": make(sparse)}
        samples: dict[str, list[float]] = {"dense": [], "sparse": []}
        try:
            for fn in runs.values():  # warm-up: kernel selection, caches
                fn()
            for _ in range(repeats):
                for name, fn in runs.items():
                    samples[name].append(_seconds(fn))
        except (RuntimeError, torch.OutOfMemoryError) as err:  # one case failing must not lose the others
            message = str(err).splitlines()[0][:200]
            log(f"{kind} tokens={tokens} batch={batch}: failed: {message}")
            rows.append({"kind": kind, "tokens": tokens, "batch": batch, "failed": message})
            torch.cuda.empty_cache()
            continue
        dense_s, sparse_s = statistics.median(samples["dense"]), statistics.median(samples["sparse"])
        row = {"kind": kind, "tokens": tokens, "batch": batch, "dense_s": dense_s, "sparse_s": sparse_s,
               "speedup": dense_s / sparse_s}
        if kind == "prefill":
            row.update(dense_tokens_per_s=tokens / dense_s, sparse_tokens_per_s=tokens / sparse_s)
        else:
            row.update(dense_ms_per_token=1e3 * dense_s / tokens, sparse_ms_per_token=1e3 * sparse_s / tokens)
        log(f"{kind} tokens={tokens} batch={batch}: dense {dense_s * 1e3:.1f} ms, 2:4 {sparse_s * 1e3:.1f} ms "
            f"({row['speedup']:.2f}x)")
        rows.append(row)
    return {"measured": True, "rows": rows}


def time_two_four(dense_dir: str, model_dir: str, settings: dict[str, Any], device: str, log=print) -> dict[str, Any]:
    """The `inference:` evaluation of a saved 2:4 model: its prunable linears swapped for
    semi-structured sparse tensors (checked to compute what their dense form computes), then timed
    against the dense model (`measure`). Where the device cannot, says why instead."""
    from ..models import adapter_for
    from ..models.loading import load_model

    reason = unsupported_reason(device)
    if reason is not None:
        log(f"2:4 inference not measured: {reason}")
        return {"measured": False, "reason": reason}
    dense, _ = load_model(dense_dir, settings.get("dtype", "float16"))
    sparse, _ = load_model(model_dir, settings.get("dtype", "float16"))
    dense.to(device)
    sparse.to(device)
    adapter = adapter_for(sparse.config.model_type)
    prunable = {id(linear) for block in adapter.blocks(sparse) for linear in adapter.prunable_linears(block).values()}
    linears = {name: module for name, module in sparse.named_modules() if id(module) in prunable}
    probe = torch.randint(0, sparse.config.vocab_size, (1, 256), generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        reference = sparse(probe).logits.float()
        swapped = sparsify_linears(sparse, linears)
        # the sparse kernels must compute what the 2:4 weights in dense form compute
        drift = float((sparse(probe).logits.float() - reference).norm() / reference.norm())
    log(f"{len(swapped)} of {len(linears)} linears as semi-structured sparse tensors; logits rel. diff {drift:.2e}")
    return {**measure(dense, sparse, settings, device, log=log), "linears": len(linears),
            "sparse_linears": len(swapped), "logits_rel_diff": drift}

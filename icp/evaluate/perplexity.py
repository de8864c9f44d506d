"""Perplexity over non-overlapping windows, as the SparseGPT/Wanda reference evaluation computes it:
the mean next-token negative log-likelihood over every predicted token of every window, exponentiated."""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from ..activations import block0_inputs
from ..models import FamilyAdapter


# Above this many logits a batch's NLL is taken a few windows at a time: its fp32 copies (the shifted
# logits, log-softmax) would otherwise add twice the logits' size (Gemma's 262 k vocabulary: 8.6 GB
# for 16 x 512 tokens). Below it (every CPU default) the sum is the single reduction it always was.
NLL_CHUNK_ELEMENTS = 2**28


def _window_nll(logits: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Summed NLL of tokens 1..T-1 of each window, given logits [B, T, V]."""
    rows = max(1, NLL_CHUNK_ELEMENTS // logits[0].numel())
    if logits.shape[0] > rows:
        return sum(_window_nll(logits[i : i + rows], window[i : i + rows]) for i in range(0, logits.shape[0], rows))
    shift_logits = logits[:, :-1, :].float()
    shift_labels = window[:, 1:].to(logits.device)
    return F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1), reduction="sum")


@torch.no_grad()
def perplexity(model: nn.Module, windows: torch.Tensor, batch_size: int = 1, log=None) -> float:
    """Whole-model path: the model sits on one device and sees each window in full."""
    total, count = 0.0, 0
    started = time.perf_counter()
    for start in range(0, windows.shape[0], batch_size):
        batch = windows[start : start + batch_size].to(model.device)
        logits = model(batch, use_cache=False).logits
        total += float(_window_nll(logits, batch))
        count += batch.numel() - batch.shape[0]
        if log:
            log(f"perplexity window {start + batch.shape[0]}/{windows.shape[0]} ({time.perf_counter() - started:.0f}s)")
    return math.exp(total / count)


@torch.no_grad()
def perplexity_blockwise(model: nn.Module, adapter: FamilyAdapter, windows: torch.Tensor, device: str, batch_size: int = 1) -> float:
    """Memory-lean path: the model stays on the CPU, one block at a time visits `device`."""
    hidden = block0_inputs(model, adapter, windows, batch_size).to(device)
    seqlen = windows.shape[1]
    for index, block in enumerate(adapter.blocks(model)):
        kwargs = adapter.block_kwargs(model.config, index, seqlen, torch.device(device), hidden.dtype)
        block.to(device)
        for start in range(0, hidden.shape[0], batch_size):
            hidden[start : start + batch_size] = adapter.run_block(block, hidden[start : start + batch_size], kwargs)
        block.to("cpu")
    for module in adapter.head_modules(model):
        module.to(device)
    total, count = 0.0, 0
    for start in range(0, hidden.shape[0], batch_size):
        window = windows[start : start + batch_size]
        logits = adapter.logits(model, hidden[start : start + batch_size])
        total += float(_window_nll(logits, window))
        count += window.numel() - window.shape[0]
    for module in adapter.head_modules(model):
        module.to("cpu")
    return math.exp(total / count)

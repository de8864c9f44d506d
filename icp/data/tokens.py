"""Token windows: seeded random calibration windows and consecutive evaluation windows."""

from __future__ import annotations

import random

import torch


def tokenize_stream(tokenizer, docs: list[str], separator: str = "\n\n") -> torch.Tensor:
    """All documents joined by `separator` and tokenized once: a 1-D LongTensor."""
    ids = tokenizer(separator.join(docs), return_tensors="pt").input_ids[0]
    return ids


def calibration_windows(
    tokenizer, docs: list[str], nsamples: int, seqlen: int, seed: int, sampler: str = "stream"
) -> torch.Tensor:
    """[nsamples, seqlen] windows drawn with Python's `random` seeded by `seed`.

    ``documents`` follows the SparseGPT/Wanda C4 sampler: draw a random document longer than
    `seqlen` tokens, then a random window inside it. ``stream`` draws random windows from all
    documents joined into one token stream (for corpora of short documents).
    """
    if nsamples <= 0 or seqlen <= 0:
        raise ValueError(f"calibration needs nsamples > 0 and seqlen > 0, got {nsamples}, {seqlen}")
    rng = random.Random(seed)
    windows = []
    if sampler == "documents":
        long_enough = 0
        for _ in range(nsamples):
            for _attempt in range(100 * len(docs)):
                ids = tokenizer(docs[rng.randint(0, len(docs) - 1)], return_tensors="pt").input_ids[0]
                if ids.numel() > seqlen:
                    long_enough += 1
                    break
            else:
                raise ValueError(f"no calibration document is longer than {seqlen} tokens")
            start = rng.randint(0, ids.numel() - seqlen - 1)
            windows.append(ids[start : start + seqlen])
    elif sampler == "stream":
        ids = tokenize_stream(tokenizer, docs)
        if ids.numel() <= seqlen:
            raise ValueError(f"calibration text has {ids.numel()} tokens, fewer than one window of {seqlen}")
        for _ in range(nsamples):
            start = rng.randint(0, ids.numel() - seqlen - 1)
            windows.append(ids[start : start + seqlen])
    else:
        raise ValueError(f"unknown calibration sampler {sampler!r}; use 'documents' or 'stream'")
    return torch.stack(windows)


def evaluation_windows(ids: torch.Tensor, seqlen: int, max_windows: int | None = None) -> torch.Tensor:
    """Consecutive non-overlapping windows [n, seqlen] (n = tokens // seqlen, optionally capped)."""
    count = ids.numel() // seqlen
    if max_windows:
        count = min(count, max_windows)
    if count == 0:
        raise ValueError(f"evaluation text has {ids.numel()} tokens, fewer than one window of {seqlen}")
    return ids[: count * seqlen].view(count, seqlen)

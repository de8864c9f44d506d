"""ICP's compensation step: fine-tune the next block so that, fed the pruned (error) stream,
its output matches the dense (standard) stream.

Pruning itself is done by an inner pruner (SparseGPT by default) inside the engine's window
step; this module holds what ICP adds on top: the short, seeded training of B_{i+1}.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Compensation:
    """Settings of the compensation fine-tune (ours to choose; the paper fixes only the idea).

    train: "all" trains every parameter of the block; "linear" only the prunable linears' weights.
    amp: bf16 autocast on CUDA (master weights stay fp32); ignored on the CPU.
    """

    epochs: int = 1
    lr: float = 1e-4
    batch_size: int = 1
    weight_decay: float = 0.0
    train: str = "all"
    seed: int = 0
    amp: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.lr < 0:
            raise ValueError(f"invalid compensation settings: {asdict(self)}")
        if self.train not in ("all", "linear"):
            raise ValueError(f"compensation 'train' must be 'all' or 'linear', got {self.train!r}")


def _trainable(block: nn.Module, adapter: Any, which: str) -> list[nn.Parameter]:
    if which == "linear":
        return [linear.weight for linear in adapter.prunable_linears(block).values()]
    return list(block.parameters())


class _PinnedStaging:
    """Batches of rows of a host-memory tensor for the accelerator: gathered into one of two pinned
    buffers (alternating) and copied without blocking, so the host gathers batch k+1 while the
    device trains on batch k. A buffer is refilled only after its previous copy has finished."""

    def __init__(self, source: torch.Tensor, device: torch.device) -> None:
        self.source, self.device = source, device
        self.slots: list[tuple[torch.Tensor, torch.cuda.Event] | None] = [None, None]
        self.turn = 0

    def batch(self, index: torch.Tensor) -> torch.Tensor:
        slot = self.slots[self.turn]
        if slot is not None and slot[0].shape[0] == len(index):
            buffer, copied = slot
            copied.synchronize()
        else:
            buffer = torch.empty((len(index), *self.source.shape[1:]), dtype=self.source.dtype, pin_memory=True)
        torch.index_select(self.source, 0, index, out=buffer)
        on_device = buffer.to(self.device, non_blocking=True)
        copied = torch.cuda.Event()
        copied.record()
        self.slots[self.turn] = (buffer, copied)
        self.turn ^= 1
        return on_device


def compensate(
    block: nn.Module,
    adapter: Any,
    block_kwargs: dict[str, Any],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    settings: Compensation,
    seed_offset: int = 0,
) -> dict[str, Any]:
    """Train `block` in place on (inputs -> targets) with MSE; returns per-epoch mean losses.

    The sample order comes from a generator seeded by (seed, seed_offset), so a resumed run
    repeats exactly the same steps. Losses stay on the device until the end (no per-step sync).
    """
    if settings.epochs == 0:
        return {"epochs": 0}
    dtype = next(block.parameters()).dtype
    block.float().eval()  # dropout off: the fine-tune must be deterministic and match inference
    params = _trainable(block, adapter, settings.train)
    for p in block.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    device = next(block.parameters()).device  # the streams may live in host memory
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay,
                                  fused=True if device.type == "cuda" else None)
    generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + seed_offset)
    use_amp = settings.amp and device.type == "cuda"
    if not use_amp:  # the block trains in fp32: masks and rotary tables of an fp16/bf16 model follow it
        block_kwargs = {name: _as_fp32(value) for name, value in block_kwargs.items()}
    staged = inputs.device.type == "cpu" and device.type == "cuda"
    if staged:
        input_batches, target_batches = _PinnedStaging(inputs, device), _PinnedStaging(targets, device)
    samples = inputs.shape[0]
    epoch_losses = []
    for _epoch in range(settings.epochs):
        order = torch.randperm(samples, generator=generator).to(inputs.device)
        total = torch.zeros((), device=device)
        steps = 0
        for start in range(0, samples, settings.batch_size):
            index = order[start : start + settings.batch_size]
            if staged:
                x, y = input_batches.batch(index).float(), target_batches.batch(index).float()
            else:
                x, y = inputs[index].to(device).float(), targets[index].to(device).float()
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
                out = adapter.run_block(block, x, block_kwargs)
            loss = F.mse_loss(out.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
            steps += 1
        epoch_losses.append(total / steps)
    for p in block.parameters():
        p.requires_grad_(False)
    block.to(dtype).eval()
    return {"epochs": settings.epochs, "epoch_loss": [float(v) for v in epoch_losses]}


def _as_fp32(value: Any) -> Any:
    """Floating tensors (also inside tuples, e.g. rotary cos/sin) as fp32; anything else as is."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, tuple):
        return tuple(_as_fp32(v) for v in value)
    return value

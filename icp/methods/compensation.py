"""ICP's compensation step: fine-tune the next block so that, fed the pruned (error) stream,
its output matches the dense (standard) stream. Its settings are `icp.spec.Compensation`.

Pruning itself is done by an inner pruner (SparseGPT by default) inside the engine's window
step; this module holds what ICP adds on top: the short, seeded training of B_{i+1}.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..spec import LATER_DEFAULTS, Compensation, hashed_compensation  # noqa: F401  (re-exported)


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


def device_batches(source: torch.Tensor, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """index -> those rows of `source` on `device`. From host memory to CUDA they are gathered into
    pinned buffers and copied without blocking (`_PinnedStaging`): no host sync per step."""
    if source.device.type == "cpu" and device.type == "cuda":
        return _PinnedStaging(source, device).batch
    return lambda index: source[index.to(source.device)].to(device)


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
    optimizer = _optimizer(params, settings, device)
    generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + seed_offset)
    use_amp = settings.amp and device.type == "cuda"
    amp_dtype = torch.float16 if settings.autocast == "fp16" else torch.bfloat16
    # fp16 gradients underflow without loss scaling; the scaler's defaults are the official loop's
    scaler = torch.amp.GradScaler("cuda") if use_amp and settings.autocast == "fp16" else None
    if not use_amp:  # the block trains in fp32: masks and rotary tables of an fp16/bf16 model follow it
        block_kwargs = {name: _as_fp32(value) for name, value in block_kwargs.items()}
    if settings.dropout:
        block.train()
    input_batches, target_batches = device_batches(inputs, device), device_batches(targets, device)
    samples = inputs.shape[0]
    epoch_losses, epoch_lrs = [], []
    with _dropout_rng(settings, seed_offset, device):
        for epoch in range(settings.epochs):
            lr = settings.lr * (settings.gamma ** epoch if settings.schedule == "exponential" else 1.0)
            for group in optimizer.param_groups:
                group["lr"] = lr
            epoch_lrs.append(lr)
            order = torch.randperm(samples, generator=generator).to(inputs.device)
            total = torch.zeros((), device=device)
            steps = 0
            for start in range(0, samples, settings.batch_size):
                index = order[start : start + settings.batch_size]
                x, y = input_batches(index).float(), target_batches(index).float()
                with torch.autocast(device_type="cuda", dtype=amp_dtype, enabled=use_amp):
                    out = adapter.run_block(block, x, block_kwargs)
                loss = F.mse_loss(out.float(), y)
                optimizer.zero_grad(set_to_none=True)
                if scaler is None:
                    loss.backward()
                    optimizer.step()
                else:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)  # skipped when the scaled gradients overflowed
                    scaler.update()
                total += loss.detach()
                steps += 1
            epoch_losses.append(total / steps)
    record: dict[str, Any] = {"epochs": settings.epochs, "epoch_loss": [float(v) for v in epoch_losses]}
    if settings.schedule != "none":
        record["epoch_lr"] = epoch_lrs
    return _finish(block, dtype, record)


def _finish(block: nn.Module, dtype: torch.dtype, record: dict[str, Any]) -> dict[str, Any]:
    for p in block.parameters():
        p.requires_grad_(False)
    block.to(dtype).eval()
    return record


def _optimizer(params: list[nn.Parameter], settings: Compensation, device: torch.device) -> torch.optim.Optimizer:
    fused = True if device.type == "cuda" else None
    kind = torch.optim.Adam if settings.optimizer == "adam" else torch.optim.AdamW
    return kind(params, lr=settings.lr, weight_decay=settings.weight_decay, fused=fused)


@contextmanager
def _dropout_rng(settings: Compensation, seed_offset: int, device: torch.device) -> Iterator[None]:
    """With dropout on, the global generators (which dropout draws from) seeded per block inside,
    and restored after: a resumed run replays the same masks, and nothing outside is disturbed."""
    if not settings.dropout:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(settings.seed * 1_000_003 + seed_offset + 7)
        yield


def _as_fp32(value: Any) -> Any:
    """Floating tensors (also inside tuples, e.g. rotary cos/sin) as fp32; anything else as is."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, tuple):
        return tuple(_as_fp32(v) for v in value)
    return value

"""Input compensation (IC): a learned, input-dependent correction of a pruned model's input.

A pool K (d x r), V (r x d) maps the token embeddings H of the input to Delta = softmax(H K /
sqrt(d)) V, and the pruned model runs on H + Delta. K and V are trained, with every weight of
the pruned model frozen, so that its last hidden states match the dense model's on the same
calibration windows (MSE). Because H depends only on the token id, the trained pool folds into
the embedding table, E' = E + softmax(E K / sqrt(d)) V, and the compensated model is an ordinary
checkpoint (`fold_into_embeddings`).

The family adapter says which module's output is H (`input_embeddings`), its width and which
features are matched (`final_features`). For SAM (our adaptation of the paper's image variant) H
is the patch embedding and the target the dense encoder's image embedding; there the pool cannot
fold (H depends on pixels) and stays a module attached to the patch embedding
(`attach_input_pool`, saved as POOL_FILE beside the weights).

Memory: the gradient flows back through every block to the input (weights frozen: no weight
gradients, no optimizer state but the pool's). On CUDA each block is checkpointed, so only the
block boundaries of one sample are kept; the dense targets stay in host memory and visit the
device one batch at a time.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..spec import InputCompensationSettings
from .compensation import device_batches

POOL_FILE = "ic_pool.safetensors"  # a compensated run's pool, beside its weights


class InputPool(nn.Module):
    """The compensation pool: Delta(H) = softmax(H K / sqrt(d)) V, computed in fp32."""

    def __init__(self, dim: int, rank: int, init_std: float = 0.01, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.key = nn.Parameter(torch.randn(dim, rank, generator=generator) * init_std)
        self.value = nn.Parameter(torch.randn(rank, dim, generator=generator) * init_std)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        scores = hidden.float() @ self.key / math.sqrt(self.key.shape[0])
        return scores.softmax(dim=-1) @ self.value

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        save_file({"key": self.key.detach().contiguous(), "value": self.value.detach().contiguous()}, str(path))

    @classmethod
    def from_file(cls, path: str | Path) -> "InputPool":
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        pool = cls(*tensors["key"].shape)
        pool.load_state_dict(tensors)
        return pool.requires_grad_(False)


def embedding_scale(embedding: nn.Module) -> float:
    """Families that scale their embeddings inside the embedding module (Gemma: sqrt(d))."""
    scale = getattr(embedding, "embed_scale", 1.0)
    return float(scale.item() if isinstance(scale, torch.Tensor) else scale)


@contextmanager
def pool_applied(embedding: nn.Module, pool: InputPool) -> Iterator[None]:
    """The model runs on H + Delta(H) (H: the embedding module's output) while inside."""

    def add_delta(_module, _args, output):
        return output + pool(output).to(output.dtype)

    handle = embedding.register_forward_hook(add_delta)
    try:
        yield
    finally:
        handle.remove()


def _add_own_pool(module: nn.Module, _args, output: torch.Tensor) -> torch.Tensor:
    return output + module.input_pool(output).to(output.dtype)


def attach_input_pool(embedding: nn.Module, pool: InputPool) -> None:
    """For good: `embedding` keeps `pool` as its child `input_pool` (moved and cast with the
    model) and adds Delta to its output (the unfoldable case, SAM)."""
    embedding.input_pool = pool
    embedding.register_forward_hook(_add_own_pool)


@contextmanager
def checkpointed(blocks: nn.ModuleList, enabled: bool) -> Iterator[None]:
    """Each block recomputes its activations in the backward pass instead of keeping them."""
    if not enabled:
        yield
        return
    for block in blocks:
        plain = block.forward
        block.forward = (lambda *args, _f=plain, **kwargs: checkpoint(_f, *args, use_reentrant=False, **kwargs))
    try:
        yield
    finally:
        for block in blocks:
            del block.forward  # back to the class's forward


@torch.no_grad()
def dense_targets(model: nn.Module, adapter: Any, inputs: torch.Tensor, batch_size: int = 4,
                  device: str = "cpu") -> torch.Tensor:
    """The dense model's final features (`adapter.final_features`: last hidden states, SAM's
    image embeddings) on every calibration input, kept on the CPU."""
    model.to(device)
    out = [adapter.final_features(model, inputs[i : i + batch_size].to(device)).cpu()
           for i in range(0, inputs.shape[0], batch_size)]
    return torch.cat(out)


def _lr_factor(step: int, warmup_steps: int) -> float:
    """Linear warm-up from 0 over `warmup_steps` optimizer steps, then constant."""
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


def train_input_compensation(
    model: nn.Module,
    adapter: Any,
    tokens: torch.Tensor,
    targets: torch.Tensor,
    settings: InputCompensationSettings,
    device: str = "cpu",
    progress: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> tuple[InputPool, dict[str, Any]]:
    """Train the pool of a pruned `model` (frozen) so that on `tokens` (token windows [n, T], or
    SAM's images) its final features match `targets` ([n, T, d]: `dense_targets`). With `progress` (a file path) the pool and optimizer are
    saved after every epoch and a rerun resumes after the last finished epoch; the sample order of
    each epoch comes from (seed, epoch), so a resumed run repeats the same steps."""
    embedding = adapter.input_embeddings(model)
    if embedding is None:
        raise ValueError(f"input compensation needs an input-embedding layer; the {adapter.model_type} adapter has none")
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    pool = InputPool(adapter.input_width(model), settings.rank, settings.init_std, settings.seed).to(device)
    optimizer = torch.optim.AdamW(pool.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    samples = tokens.shape[0]
    steps_per_epoch = math.ceil(math.ceil(samples / settings.batch_size) / settings.accumulation)
    warmup_steps = round(settings.warmup * steps_per_epoch * settings.epochs)
    record: dict[str, Any] = {"epoch_loss": [], "epoch_seconds": [], "steps_per_epoch": steps_per_epoch,
                              "warmup_steps": warmup_steps}
    start_epoch = 0
    if progress is not None and Path(progress).is_file():
        saved = torch.load(progress, map_location="cpu", weights_only=False)
        pool.load_state_dict(saved["pool"])
        optimizer.load_state_dict(saved["optimizer"])
        record, start_epoch = saved["record"], saved["epoch"]
        log(f"resuming input compensation after epoch {start_epoch}/{settings.epochs}")
    target_device = torch.device(device)
    on_cuda = target_device.type == "cuda"
    use_amp = settings.amp and on_cuda
    step = start_epoch * steps_per_epoch
    input_batches, target_batches = device_batches(tokens, target_device), device_batches(targets, target_device)
    with pool_applied(embedding, pool), checkpointed(adapter.blocks(model), settings.checkpoint_blocks and on_cuda):
        for epoch in range(start_epoch, settings.epochs):
            started = time.perf_counter()
            order = torch.randperm(samples, generator=torch.Generator().manual_seed(settings.seed * 1_000_003 + epoch))
            batches = [order[i : i + settings.batch_size] for i in range(0, samples, settings.batch_size)]
            total = torch.zeros((), device=device)
            optimizer.zero_grad(set_to_none=True)
            for k, index in enumerate(batches):
                x, y = input_batches(index), target_batches(index).float()
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                    out = adapter.final_features(model, x)
                loss = F.mse_loss(out.float(), y)
                (loss / settings.accumulation).backward()
                total += loss.detach()
                if (k + 1) % settings.accumulation == 0 or k + 1 == len(batches):
                    for group in optimizer.param_groups:
                        group["lr"] = settings.lr * _lr_factor(step, warmup_steps)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    step += 1
            record["epoch_loss"].append(float(total) / len(batches))
            record["epoch_seconds"].append(time.perf_counter() - started)
            if progress is not None:  # before the log line: an epoch reported is an epoch saved
                _save_progress(Path(progress), pool, optimizer, record, epoch + 1)
            log(f"input compensation epoch {epoch + 1}/{settings.epochs}: loss {record['epoch_loss'][-1]:.6g} "
                f"in {record['epoch_seconds'][-1]:.1f}s")
    if on_cuda:
        record["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    record["epochs"] = settings.epochs
    return pool.cpu(), record


def _save_progress(path: Path, pool: InputPool, optimizer: torch.optim.Optimizer, record: dict[str, Any], epoch: int) -> None:
    from ..checkpoint import atomic_torch_save

    atomic_torch_save({"pool": pool.state_dict(), "optimizer": optimizer.state_dict(),
                       "record": record, "epoch": epoch}, path)


@torch.no_grad()
def fold_into_embeddings(model: nn.Module, adapter: Any, pool: InputPool, chunk: int = 8192) -> None:
    """Replace the embedding table E by E + Delta(E), in place. Where the output head shares E
    (tied embeddings), it is untied first and keeps the original E."""
    embedding = adapter.input_embeddings(model)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and head.weight is embedding.weight:
        head.weight = nn.Parameter(embedding.weight.detach().clone(), requires_grad=False)
        model.config.tie_word_embeddings = False
        if hasattr(model.config, "get_text_config"):  # composite configs keep the flag on the text part
            model.config.get_text_config().tie_word_embeddings = False
    scale = embedding_scale(embedding)
    weight = embedding.weight
    pool = pool.to(weight.device)
    new = torch.empty_like(weight)
    for start in range(0, weight.shape[0], chunk):
        rows = weight[start : start + chunk].float() * scale  # what the embedding module outputs
        new[start : start + chunk] = ((rows + pool(rows)) / scale).to(weight.dtype)
    embedding.weight = nn.Parameter(new, requires_grad=False)

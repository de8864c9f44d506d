"""Dense inputs of block 0: captured once per (model, calibration set), shared by every run."""

from __future__ import annotations

import torch
from torch import nn

from .models import FamilyAdapter


class _StopForward(Exception):
    pass


class _InputCatcher(nn.Module):
    """Stands in for block 0: records its hidden-state input, then stops the forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.captured: torch.Tensor | None = None

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        self.captured = hidden_states.detach()
        raise _StopForward


@torch.no_grad()
def block0_inputs(model: nn.Module, adapter: FamilyAdapter, inputs: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """Inputs of the first block for every calibration sample: [samples, seqlen, hidden] for
    token windows [samples, seqlen], [samples, H, W, C] for SAM's preprocessed images."""
    blocks = adapter.blocks(model)
    first = blocks[0]
    catcher = _InputCatcher()
    blocks[0] = catcher
    outputs = []
    try:
        device = next(model.parameters()).device
        for start in range(0, inputs.shape[0], batch_size):
            try:
                adapter.call_model(model, inputs[start : start + batch_size].to(device))
            except _StopForward:
                pass
            if catcher.captured is None:
                raise RuntimeError("the model's forward never reached its first block")
            outputs.append(catcher.captured.cpu())
            catcher.captured = None
    finally:
        blocks[0] = first
    return torch.cat(outputs)

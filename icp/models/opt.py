"""OPT family (facebook/opt-125m ... 66b): `model.model.decoder.layers`, learned positions."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.models.opt.modeling_opt import OPTDecoderLayer

from .base import FamilyAdapter, causal_mask


class OPTAdapter(FamilyAdapter):
    model_type = "opt"
    linear_roles = {
        "self_attn.q_proj": "q",
        "self_attn.k_proj": "k",
        "self_attn.v_proj": "v",
        "self_attn.out_proj": "o",
        "fc1": "fc1",
        "fc2": "fc2",
    }
    shared_inputs = (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),)

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return model.model.decoder.layers

    def block_prefix(self, index: int) -> str:
        return f"model.decoder.layers.{index}."

    def build_block(self, config: Any, index: int) -> nn.Module:
        return OPTDecoderLayer(config, layer_idx=index)

    def block_kwargs(self, config: Any, index: int, seqlen: int, device: torch.device,
                     dtype: torch.dtype) -> dict[str, Any]:
        return {"attention_mask": causal_mask(seqlen, device, dtype)}

    def logits(self, model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        decoder = model.model.decoder
        if decoder.final_layer_norm is not None:
            hidden = decoder.final_layer_norm(hidden)
        if decoder.project_out is not None:
            hidden = decoder.project_out(hidden)
        return model.lm_head(hidden)

    def head_modules(self, model: nn.Module) -> list[nn.Module]:
        decoder = model.model.decoder
        parts = [decoder.final_layer_norm, decoder.project_out, model.lm_head]
        return [p for p in parts if p is not None]

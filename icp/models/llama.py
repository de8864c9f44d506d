"""Llama family (Llama-2, SmolLM2, ...): `model.model.layers`, rotary position embeddings."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

from .base import FamilyAdapter, causal_mask


class LlamaAdapter(FamilyAdapter):
    model_type = "llama"
    linear_roles = {
        "self_attn.q_proj": "q",
        "self_attn.k_proj": "k",
        "self_attn.v_proj": "v",
        "self_attn.o_proj": "o",
        "mlp.gate_proj": "fc1",
        "mlp.up_proj": "fc1",
        "mlp.down_proj": "fc2",
    }
    shared_inputs = (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ("mlp.gate_proj", "mlp.up_proj"))

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return model.model.layers

    def block_prefix(self, index: int) -> str:
        return f"model.layers.{index}."

    def build_block(self, config: Any, index: int) -> nn.Module:
        return LlamaDecoderLayer(config, layer_idx=index)

    def block_kwargs(self, config: Any, index: int, seqlen: int, device: torch.device,
                     dtype: torch.dtype) -> dict[str, Any]:
        # Current transformers computes the rotary (cos, sin) once at model level and hands them to
        # every block; we do the same here.
        rotary = LlamaRotaryEmbedding(config=config).to(device)
        positions = torch.arange(seqlen, device=device)[None]
        probe = torch.zeros(1, seqlen, config.hidden_size, device=device, dtype=dtype)
        return {
            "attention_mask": causal_mask(seqlen, device, dtype),
            "position_ids": positions,
            "position_embeddings": rotary(probe, positions),
        }

    def logits(self, model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        return model.lm_head(model.model.norm(hidden))

    def head_modules(self, model: nn.Module) -> list[nn.Module]:
        return [model.model.norm, model.lm_head]

"""Llama-shaped decoder families: `model.model.layers`, rotary position embeddings handed to every
block, q/k/v/o attention and a gated MLP. A family here is a subclass naming its `transformers`
classes; what differs between families (sliding-window layers, per-layer-type rotary tables,
fused projections) is declared, not coded in loops of its own.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any, ClassVar

import torch
from torch import nn

from .base import FamilyAdapter, causal_mask

LLAMA_ROLES = {
    "self_attn.q_proj": "q",
    "self_attn.k_proj": "k",
    "self_attn.v_proj": "v",
    "self_attn.o_proj": "o",
    "mlp.gate_proj": "fc1",
    "mlp.up_proj": "fc1",
    "mlp.down_proj": "fc2",
}
LLAMA_SHARED = (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ("mlp.gate_proj", "mlp.up_proj"))


class DecoderAdapter(FamilyAdapter):
    """A decoder-only family whose blocks take (hidden, attention_mask, position_ids, position_embeddings)."""

    modeling: ClassVar[str]  # transformers module, e.g. "transformers.models.llama.modeling_llama"
    layer_class: ClassVar[str]
    rotary_class: ClassVar[str]
    linear_roles = LLAMA_ROLES
    shared_inputs = LLAMA_SHARED
    rotary_per_layer_type: ClassVar[bool] = False  # Gemma-3: a rotary table per layer type (local / global base)
    attn_implementation: ClassVar[str] = "sdpa"

    def _class(self, name: str) -> type:
        return getattr(import_module(self.modeling), name)

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return model.model.layers

    def block_prefix(self, index: int) -> str:
        return f"model.layers.{index}."

    def build_block(self, config: Any, index: int) -> nn.Module:
        return self._class(self.layer_class)(config, layer_idx=index)

    def layer_type(self, config: Any, index: int) -> str:
        """'full_attention' or 'sliding_attention' ('sliding_attention' on every layer of a family
        with one `sliding_window` for all, such as Mistral when it sets one)."""
        types = getattr(config, "layer_types", None)
        if types:
            return types[index]
        return "sliding_attention" if getattr(config, "sliding_window", None) else "full_attention"

    def sliding_window(self, config: Any, index: int) -> int | None:
        return config.sliding_window if self.layer_type(config, index) == "sliding_attention" else None

    def block_kind(self, config: Any, index: int) -> Any:
        return self.layer_type(config, index)

    def block_kwargs(self, config: Any, index: int, seqlen: int, device: torch.device,
                     dtype: torch.dtype) -> dict[str, Any]:
        # Current transformers computes the rotary (cos, sin) once at model level and hands them to
        # every block; we do the same, per layer type where the family has several.
        rotary = self._class(self.rotary_class)(config=config).to(device)
        positions = torch.arange(seqlen, device=device)[None]
        probe = torch.zeros(1, seqlen, config.hidden_size, device=device, dtype=dtype)
        if self.rotary_per_layer_type:
            position_embeddings = rotary(probe, positions, self.layer_type(config, index))
        else:
            position_embeddings = rotary(probe, positions)
        return {
            "attention_mask": causal_mask(seqlen, device, dtype, self.sliding_window(config, index)),
            "position_ids": positions,
            "position_embeddings": position_embeddings,
        }

    def logits(self, model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        logits = model.lm_head(model.model.norm(hidden))
        cap = getattr(model.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    def head_modules(self, model: nn.Module) -> list[nn.Module]:
        return [model.model.norm, model.lm_head]


def _family(model_type: str, module: str, prefix: str, **extra: Any) -> type[DecoderAdapter]:
    attrs = {"model_type": model_type, "modeling": f"transformers.models.{module}.modeling_{module}",
             "layer_class": f"{prefix}DecoderLayer", "rotary_class": f"{prefix}RotaryEmbedding", **extra}
    return type(f"{prefix}Adapter", (DecoderAdapter,), attrs)


MistralAdapter = _family("mistral", "mistral", "Mistral")
Qwen2Adapter = _family("qwen2", "qwen2", "Qwen2")
Qwen3Adapter = _family("qwen3", "qwen3", "Qwen3")  # q/k norms live inside the attention: nothing to declare
# Gemma-2 soft-caps its attention logits, which SDPA cannot: its blocks run eager attention
Gemma2Adapter = _family("gemma2", "gemma2", "Gemma2", attn_implementation="eager")
Gemma3TextAdapter = _family("gemma3_text", "gemma3", "Gemma3", rotary_per_layer_type=True)
# Phi-3 fuses q/k/v into one linear and gate/up into another: each fused matrix has one role (so
# beta and N:M reach every row of it), one set of input statistics, and its sparsity is allocated
# over the whole fused matrix (as for SAM's fused qkv)
Phi3Adapter = _family("phi3", "phi3", "Phi3", linear_roles={
    "self_attn.qkv_proj": "qkv", "self_attn.o_proj": "o", "mlp.gate_up_proj": "fc1", "mlp.down_proj": "fc2"},
    shared_inputs=())

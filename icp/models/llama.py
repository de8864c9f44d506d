"""Llama family (Llama-2, Llama-3, SmolLM2, ...): the Llama-shaped decoder (see `decoder`)."""

from __future__ import annotations

from .decoder import DecoderAdapter


class LlamaAdapter(DecoderAdapter):
    model_type = "llama"
    modeling = "transformers.models.llama.modeling_llama"
    layer_class = "LlamaDecoderLayer"
    rotary_class = "LlamaRotaryEmbedding"

"""Model families behind one interface. Adding a family = one adapter module + one line here.

Adapters are imported when first asked for: a job that prunes an OPT model never imports the
Llama or SAM modeling code (each costs about a second of start-up)."""

from __future__ import annotations

from importlib import import_module

from .base import ROLES, FamilyAdapter

ADAPTERS: dict[str, str] = {  # config.model_type -> "module:class"
    "opt": "icp.models.opt:OPTAdapter",
    "llama": "icp.models.llama:LlamaAdapter",
    "mistral": "icp.models.decoder:MistralAdapter",
    "qwen2": "icp.models.decoder:Qwen2Adapter",
    "qwen3": "icp.models.decoder:Qwen3Adapter",
    "gemma2": "icp.models.decoder:Gemma2Adapter",
    "gemma3_text": "icp.models.decoder:Gemma3TextAdapter",
    "phi3": "icp.models.decoder:Phi3Adapter",
    "sam_vit": "icp.models.sam:SamAdapter",  # segment-anything's ViT image encoder
}


def adapter_for(model_type: str) -> FamilyAdapter:
    """The adapter of a Hugging Face `config.model_type`; a clear error for unsupported families."""
    if model_type not in ADAPTERS:
        raise ValueError(f"unsupported model family {model_type!r}; supported: {sorted(ADAPTERS)}")
    module, name = ADAPTERS[model_type].split(":")
    return getattr(import_module(module), name)()


def attention_implementation(model_type: str | None) -> str:
    """The attention kernel a family's blocks run with: SDPA, unless the adapter needs another
    (Gemma-2's soft-capped attention logits: eager)."""
    if model_type not in ADAPTERS:
        return "sdpa"
    return getattr(adapter_for(model_type), "attn_implementation", "sdpa")


__all__ = ["ADAPTERS", "ROLES", "FamilyAdapter", "adapter_for", "attention_implementation"]

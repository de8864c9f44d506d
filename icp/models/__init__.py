"""Model families behind one interface. Adding a family = one adapter module + one line here.

Adapters are imported when first asked for: a job that prunes an OPT model never imports the
Llama or SAM modeling code (each costs about a second of start-up)."""

from __future__ import annotations

from importlib import import_module

from .base import ROLES, FamilyAdapter

ADAPTERS: dict[str, str] = {  # config.model_type -> "module:class"
    "opt": "icp.models.opt:OPTAdapter",
    "llama": "icp.models.llama:LlamaAdapter",
    "sam_vit": "icp.models.sam:SamAdapter",  # segment-anything's ViT image encoder
}


def adapter_for(model_type: str) -> FamilyAdapter:
    """The adapter of a Hugging Face `config.model_type`; a clear error for unsupported families."""
    if model_type not in ADAPTERS:
        raise ValueError(f"unsupported model family {model_type!r}; supported: {sorted(ADAPTERS)}")
    module, name = ADAPTERS[model_type].split(":")
    return getattr(import_module(module), name)()


__all__ = ["ADAPTERS", "ROLES", "FamilyAdapter", "adapter_for"]

"""Model families behind one interface. Adding a family = one adapter module + one line here."""

from __future__ import annotations

from .base import ROLES, FamilyAdapter
from .llama import LlamaAdapter
from .opt import OPTAdapter
from .sam import SamAdapter

ADAPTERS: dict[str, type[FamilyAdapter]] = {
    "opt": OPTAdapter,
    "llama": LlamaAdapter,
    "sam_vit": SamAdapter,  # segment-anything's ViT image encoder
}


def adapter_for(model_type: str) -> FamilyAdapter:
    """The adapter of a Hugging Face `config.model_type`; a clear error for unsupported families."""
    if model_type not in ADAPTERS:
        raise ValueError(f"unsupported model family {model_type!r}; supported: {sorted(ADAPTERS)}")
    return ADAPTERS[model_type]()


__all__ = ["ADAPTERS", "ROLES", "FamilyAdapter", "adapter_for"]

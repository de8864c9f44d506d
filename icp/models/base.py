"""What the engine needs to know about a model family, behind one interface.

An adapter never runs a loop of its own: it names the pieces (blocks, their prunable linears and
the role each plays, the arguments a block is called with, the head) and the engine does the rest.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

# Roles shared by every family. The ICP schedule's beta reads them: "qkv" layers are pruned
# less, "fc2" (the second MLP linear) absorbs the difference.
ROLES = ("q", "k", "v", "qkv", "o", "fc1", "fc2")


class FamilyAdapter(ABC):
    """One per model family (OPT, Llama, SAM, ...)."""

    model_type: ClassVar[str]
    # linear name inside a block -> role (one of ROLES)
    linear_roles: ClassVar[dict[str, str]]
    # groups of linears that read the same input tensor (methods may share statistics across one)
    shared_inputs: ClassVar[tuple[tuple[str, ...], ...]] = ()

    @abstractmethod
    def blocks(self, model: nn.Module) -> nn.ModuleList:
        """The model's list of transformer blocks."""

    @abstractmethod
    def block_prefix(self, index: int) -> str:
        """State-dict prefix of block `index` in a saved checkpoint, ending in '.'."""

    @abstractmethod
    def build_block(self, config: Any, index: int) -> nn.Module:
        """An empty (uninitialised) block of the right shape, ready for `load_state_dict`."""

    @abstractmethod
    def block_kwargs(self, config: Any, index: int, seqlen: int, device: torch.device,
                     dtype: torch.dtype) -> dict[str, Any]:
        """Keyword arguments block `index` is called with on sequences of length `seqlen` (its
        attention mask, rotary table, ...). Built once per `block_kind`."""

    def block_kind(self, config: Any, index: int) -> Any:
        """Blocks of one kind take the same call arguments (one kind, unless a family mixes layer
        types, e.g. sliding-window and global attention)."""
        return None

    def num_blocks(self, config: Any) -> int:
        return config.num_hidden_layers

    # Input compensation (icp.methods.input_compensation): the module whose output the pool
    # corrects, its width, and the features the compensated model must match.
    folds_input_pool: ClassVar[bool] = True  # token inputs: the pool folds into the embedding table

    def input_embeddings(self, model: nn.Module) -> nn.Module | None:
        """The input-embedding layer input compensation corrects (None: the family has none)."""
        return model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None

    def input_width(self, model: nn.Module) -> int:
        return self.input_embeddings(model).embedding_dim

    def final_features(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """What input compensation matches to the dense model's: the base model's last hidden
        states (after its final norm), [batch, seqlen, hidden]."""
        return model.base_model(input_ids=inputs, use_cache=False).last_hidden_state

    # Optional helpers of block-wise evaluation (perplexity with one block at a time on the device)

    def logits(self, model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm, projections and language-model head applied to the last block's output."""
        raise NotImplementedError(f"{type(self).__name__} has no block-wise language-model head")

    def head_modules(self, model: nn.Module) -> list[nn.Module]:
        """Modules `logits` uses (moved to the compute device for block-wise evaluation)."""
        return []

    def call_model(self, model: nn.Module, inputs: torch.Tensor) -> None:
        """The whole model's forward on calibration inputs (stopped at block 0 to catch its input)."""
        model(inputs, use_cache=False)

    def run_block(self, block: nn.Module, hidden: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        out = block(hidden, **kwargs)
        return out[0] if isinstance(out, tuple) else out

    def prunable_linears(self, block: nn.Module) -> dict[str, nn.Linear]:
        """Linears to prune, by their name inside the block, in a fixed order."""
        return {name: block.get_submodule(name) for name in self.linear_roles}

    def role(self, name: str) -> str:
        return self.linear_roles[name]


def causal_mask(seqlen: int, device: torch.device, dtype: torch.dtype, window: int | None = None) -> torch.Tensor | None:
    """The `attention_mask` a causal block is called with.

    Full causal attention on CUDA: None, so SDPA takes its causal flag and runs flash attention
    instead of reading a T x T mask. Elsewhere, and for a sliding-window layer on every device: an
    additive [1, 1, T, T] mask, 0 where query i may see key j (j <= i, and i - j < `window` when
    a window is set), the dtype's minimum elsewhere (the CPU path, whose results are recorded and
    reproduced bit for bit)."""
    if torch.device(device).type == "cuda" and (window is None or window >= seqlen):
        return None
    mask = torch.full((seqlen, seqlen), torch.finfo(dtype).min, device=device, dtype=dtype)
    mask = torch.triu(mask, diagonal=1)
    if window is not None and window < seqlen:
        mask = mask + torch.tril(torch.full_like(mask, torch.finfo(dtype).min), diagonal=-window)
        mask = mask.clamp(min=torch.finfo(dtype).min)
    return mask[None, None]

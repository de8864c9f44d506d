"""What a run is, as plain data (no torch): the pruning run's spec, ICP's compensation settings,
and the settings of the post-pruning stages. The workflow builds these from the config, hashes
them into run names (`icp.layout`) and hands them to the jobs as JSON.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .pattern import Pattern, parse_pattern
from .registry import LAYER_PRUNERS, METHODS

# method options that choose how, not what: the SparseGPT sweep's kernel gives the same weights
RESULT_NEUTRAL_OPTIONS = ("kernel",)

# ICP's own settings when the config leaves them out (one place: the config checks, the API and
# the ablations' "table setting" all read these)
ICP_DEFAULTS: dict[str, Any] = {"inner": "sparsegpt", "alpha": 1.0, "beta": 1.0}


@dataclass(frozen=True)
class Compensation:
    """Settings of the compensation fine-tune (the paper fixes only the idea; see the README's table
    of the official scripts' settings for how theirs map onto these).

    train: "all" trains every parameter of the block; "linear" only the prunable linears' weights.
    amp: mixed precision on CUDA (master weights stay fp32); ignored on the CPU.
    autocast: the mixed-precision type: "bf16", or "fp16" with a gradient scaler (the official loop).
    optimizer: "adamw" (decoupled weight decay) or "adam" (the official loop; L2 decay if any).
    schedule: "none" (constant lr) or "exponential" (lr x gamma after every epoch, as the official
        loop's ExponentialLR stepped once per epoch).
    dropout: train with the block's dropout active (the official loop puts the block in train mode;
        only OPT has nonzero dropout), drawn from a generator seeded like the sample order.
    """

    epochs: int = 1
    lr: float = 1e-4
    batch_size: int = 1
    weight_decay: float = 0.0
    train: str = "all"
    seed: int = 0
    amp: bool = True
    autocast: str = "bf16"
    optimizer: str = "adamw"
    schedule: str = "none"
    gamma: float = 1.0
    dropout: bool = False

    def __post_init__(self) -> None:
        for name in ("lr", "weight_decay", "gamma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"compensation '{name}' must be a finite number, got {value!r}")
        for name in ("epochs", "batch_size", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"compensation '{name}' must be a whole number, got {value!r}")
        if self.epochs < 0 or self.batch_size < 1 or self.lr < 0 or self.weight_decay < 0:
            raise ValueError(f"invalid compensation settings: {asdict(self)}")
        choices = {"train": ("all", "linear"), "autocast": ("bf16", "fp16"), "optimizer": ("adamw", "adam"),
                   "schedule": ("none", "exponential")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"compensation '{name}' must be one of {list(allowed)}, got {getattr(self, name)!r}")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"compensation 'gamma' must be in (0, 1], got {self.gamma!r}")
        if self.schedule == "none" and self.gamma != 1.0:
            raise ValueError("compensation 'gamma' needs schedule: exponential (with schedule: none the lr is constant)")
        for name in ("amp", "dropout"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"compensation '{name}' must be true or false, got {getattr(self, name)!r}")


# Settings added after runs were already hashed: left out of a run's identity while at their
# default, so runs made before they existed keep their hashes (and their results on disk).
LATER_DEFAULTS = {"autocast": "bf16", "optimizer": "adamw", "schedule": "none", "gamma": 1.0, "dropout": False}


def hashed_compensation(settings: dict[str, Any]) -> dict[str, Any]:
    """The compensation settings as a run's hash holds them (see LATER_DEFAULTS)."""
    return {k: v for k, v in settings.items() if not (k in LATER_DEFAULTS and v == LATER_DEFAULTS[k])}


@dataclass(frozen=True)
class RunSpec:
    """One pruned model: method, pattern, sparsity, bits, and the method's own settings.

    `inner`, `alpha`, `beta` and `compensation` are ICP's (left at their defaults, and so out of
    the way, for the other methods)."""

    method: str
    pattern: str = "unstructured"
    sparsity: float = 0.5
    wbits: int = 16
    inner: str = ICP_DEFAULTS["inner"]  # ICP's inner pruner
    alpha: float = ICP_DEFAULTS["alpha"]  # ICP inter-block rearrangement
    beta: float = ICP_DEFAULTS["beta"]  # ICP intra-block rearrangement
    compensation: dict[str, Any] = field(default_factory=dict)
    method_options: dict[str, Any] = field(default_factory=dict)  # e.g. SparseGPT blocksize, percdamp
    track_error: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; known: {list(METHODS)}")
        if self.method == "icp" and self.inner not in LAYER_PRUNERS:
            raise ValueError(f"unknown ICP inner pruner {self.inner!r}; known: {sorted(LAYER_PRUNERS)}")
        self.as_pattern()  # validates pattern, sparsity and wbits

    def as_pattern(self) -> Pattern:
        return parse_pattern(self.pattern, self.sparsity, self.wbits)

    @property
    def pruner(self) -> str:
        """The layer pruner that runs inside the block walk."""
        return self.inner if self.method == "icp" else self.method

    @property
    def compensates(self) -> bool:
        return self.method == "icp"

    def resume_key(self) -> dict[str, Any]:
        """What finished blocks must share to be resumed from: the spec without the options that
        choose how, not what (the SparseGPT sweep's kernel gives the same weights)."""
        key = self.to_dict()
        key["method_options"] = {k: v for k, v in key["method_options"].items() if k not in RESULT_NEUTRAL_OPTIONS}
        return key

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunSpec":
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class InputCompensationSettings:
    """Input compensation (IC): a pool K (d x rank), V (rank x d) learned so that the pruned model
    fed H + softmax(H K / sqrt(d)) V (H: its input embeddings; SAM: its patch embeddings) gives the
    dense model's last hidden states (SAM: image embedding). Defaults are the IC paper's LLM recipe where it states one (rank 32, N(0, 0.01^2)
    initialisation, AdamW at lr 1e-3 with linear warm-up, 20 epochs, batch 1 with gradient
    accumulation 2); the rest is ours (README: "Input compensation")."""

    rank: int = 32
    epochs: int = 20
    lr: float = 1e-3
    warmup: float = 0.1  # fraction of the optimizer steps over which lr rises linearly from 0 (ours)
    batch_size: int = 1
    accumulation: int = 2
    init_std: float = 0.01
    weight_decay: float = 0.0  # ours: the paper names AdamW but no decay
    seed: int = 0
    amp: bool = True  # bf16 autocast on CUDA (the pool stays fp32); ignored on the CPU
    checkpoint_blocks: bool = True  # activation checkpointing per block on CUDA (memory, not results)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", int) and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"input compensation '{f.name}' must be a whole number, got {value!r}")
            if f.type in ("float", float) and (isinstance(value, bool) or not isinstance(value, (int, float))
                                               or not math.isfinite(value)):
                raise ValueError(f"input compensation '{f.name}' must be a finite number, got {value!r}")
            if f.type in ("bool", bool) and not isinstance(value, bool):
                raise ValueError(f"input compensation '{f.name}' must be true or false, got {value!r}")
        if self.rank < 1:
            raise ValueError(f"input compensation 'rank' must be at least 1, got {self.rank}")
        if self.epochs < 0 or self.batch_size < 1 or self.accumulation < 1:
            raise ValueError("input compensation needs epochs >= 0, batch_size >= 1 and accumulation >= 1")
        if self.lr < 0 or self.init_std < 0 or self.weight_decay < 0 or not 0 <= self.warmup < 1:
            raise ValueError("input compensation needs lr, init_std, weight_decay >= 0 and warmup in [0, 1)")


# how-not-what settings of a stage: not in its hash
STAGE_NEUTRAL_SETTINGS = {"ic": ("checkpoint_blocks",)}
STAGE_SETTINGS = {"ic": InputCompensationSettings}


def stage_settings(stage: str, settings: dict[str, Any]) -> Any:
    """The settings object of a stage (a clear error for an unknown key or value)."""
    cls = STAGE_SETTINGS[stage]
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(settings) - known - {"calibration"})
    if unknown:
        raise ValueError(f"stages.{stage}: unknown setting(s) {unknown}; known: {sorted(known | {'calibration'})}")
    return cls(**{k: v for k, v in settings.items() if k != "calibration"})


def hashed_stage_settings(stage: str, settings: dict[str, Any]) -> dict[str, Any]:
    """A stage's settings as its hash holds them: every value made explicit (a default that later
    changes re-runs the stage), without the how-not-what ones and the calibration override (hashed
    as the calibration key)."""
    full = asdict(stage_settings(stage, settings))
    return {k: v for k, v in full.items() if k not in STAGE_NEUTRAL_SETTINGS.get(stage, ())}

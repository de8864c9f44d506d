"""Segment Anything (SAM): the ViT image encoder is pruned block by block; the patch embedding,
neck, prompt encoder and mask decoder stay dense.

A SAM checkpoint is the official ``sam_vit_{b,l,h}_*.pth`` state dict. `export_sam` turns it into
the pipeline's dense directory (``model.safetensors`` + ``config.json`` with ``model_type:
sam_vit``), so the engine reads SAM blocks exactly as it reads language-model blocks. The
encoder's shape comes from the variant (b/l/h) and can be overridden field by field (``arch`` in
the model config), which is how the tests build tiny SAMs.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .base import FamilyAdapter

MODEL_TYPE = "sam_vit"
PIXEL_MEAN = (123.675, 116.28, 103.53)  # SAM's input normalisation (RGB, 0-255 scale)
PIXEL_STD = (58.395, 57.12, 57.375)

# the official builders' encoder settings (segment_anything/build_sam.py)
VARIANTS: dict[str, dict[str, Any]] = {
    "vit_b": {"embed_dim": 768, "depth": 12, "num_heads": 12, "global_attn_indexes": [2, 5, 8, 11]},
    "vit_l": {"embed_dim": 1024, "depth": 24, "num_heads": 16, "global_attn_indexes": [5, 11, 17, 23]},
    "vit_h": {"embed_dim": 1280, "depth": 32, "num_heads": 16, "global_attn_indexes": [7, 15, 23, 31]},
}


@dataclass
class SamConfig:
    """Everything needed to rebuild a SAM of a given shape (defaults: SAM ViT-B)."""

    variant: str = "vit_b"
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    global_attn_indexes: list[int] = field(default_factory=lambda: [2, 5, 8, 11])
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    mlp_ratio: float = 4.0
    prompt_embed_dim: int = 256
    decoder_mlp_dim: int = 2048
    decoder_heads: int = 8
    iou_head_hidden_dim: int = 256
    model_type: str = MODEL_TYPE

    @classmethod
    def for_variant(cls, variant: str, overrides: dict[str, Any] | None = None) -> "SamConfig":
        if variant not in VARIANTS:
            raise ValueError(f"unknown SAM variant {variant!r}; known: {sorted(VARIANTS)}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(overrides or {}) - fields
        if unknown:
            raise ValueError(f"unknown SAM arch keys {sorted(unknown)}; known: {sorted(fields - {'model_type'})}")
        return cls(variant=variant, **{**VARIANTS[variant], **(overrides or {})})

    @classmethod
    def from_model(cls, model: nn.Module) -> "SamConfig":
        """The whole model's shape, read off a segment-anything `Sam` in memory."""
        encoder, decoder = model.image_encoder, model.mask_decoder
        blocks = list(encoder.blocks)
        embed_dim = encoder.patch_embed.proj.out_channels
        windows = [block.window_size for block in blocks]
        return cls(
            variant="custom", embed_dim=embed_dim, depth=len(blocks), num_heads=blocks[0].attn.num_heads,
            global_attn_indexes=[i for i, w in enumerate(windows) if w == 0], image_size=encoder.img_size,
            patch_size=encoder.patch_embed.proj.kernel_size[0], window_size=max(windows),
            mlp_ratio=blocks[0].mlp.lin1.out_features / embed_dim,
            prompt_embed_dim=model.prompt_encoder.embed_dim,
            decoder_mlp_dim=decoder.transformer.layers[0].mlp.lin1.out_features,
            decoder_heads=decoder.transformer.layers[0].self_attn.num_heads,
            iou_head_hidden_dim=decoder.iou_prediction_head.layers[0].out_features,
        )

    @property
    def num_hidden_layers(self) -> int:  # the name the workflow reads from every dense config.json
        return self.depth

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "num_hidden_layers": self.depth}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "SamConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def variant_from_name(path: str | Path) -> str:
    """'sam_vit_b_01ec64.pth' -> 'vit_b' (the official checkpoint names)."""
    match = re.search(r"vit_([blh])", Path(path).name)
    if not match:
        raise ValueError(f"cannot tell the SAM variant from {Path(path).name!r}; set models.<name>.variant (vit_b, vit_l or vit_h)")
    return f"vit_{match.group(1)}"


def build_sam(config: SamConfig) -> nn.Module:
    """A SAM with random weights in the shape `config` describes (segment-anything's own modules)."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    grid = config.grid_size
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=config.image_size, patch_size=config.patch_size, embed_dim=config.embed_dim,
            depth=config.depth, num_heads=config.num_heads, mlp_ratio=config.mlp_ratio,
            out_chans=config.prompt_embed_dim, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6),
            use_rel_pos=True, global_attn_indexes=tuple(config.global_attn_indexes), window_size=config.window_size,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=config.prompt_embed_dim, image_embedding_size=(grid, grid),
            input_image_size=(config.image_size, config.image_size), mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=config.prompt_embed_dim,
                                          mlp_dim=config.decoder_mlp_dim, num_heads=config.decoder_heads),
            transformer_dim=config.prompt_embed_dim, iou_head_depth=3, iou_head_hidden_dim=config.iou_head_hidden_dim,
        ),
        pixel_mean=list(PIXEL_MEAN),
        pixel_std=list(PIXEL_STD),
    ).eval()


def verify_checksum(path: Path) -> None:
    """A checkpoint listed in a SHA256SUMS file beside it must match its sum (shipped weights)."""
    import hashlib

    sums = path.parent / "SHA256SUMS"
    if not sums.is_file():
        return
    expected = {name.strip(): digest for digest, name in (line.split(maxsplit=1) for line in sums.read_text().splitlines() if line.strip())}
    if path.name in expected:
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
        if actual != expected[path.name]:
            raise ValueError(f"SAM checkpoint {path} is corrupt: sha256 {actual[:16]}… does not match "
                             f"{expected[path.name][:16]}… in {sums}")


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An official SAM .pth (a plain state dict, read without unpickling arbitrary objects) or a
    SAM saved as ``*.sam.safetensors`` by `icp.train_sam` (its shape in the metadata).
    Returns (state dict, {variant, arch} from the file where it says them)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SAM checkpoint {path} does not exist")
    verify_checksum(path)
    shape: dict[str, Any] = {}
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                state = {k: f.get_tensor(k).float() for k in f.keys()}
            shape = {"variant": meta.get("variant"), "arch": json.loads(meta["arch"]) if "arch" in meta else None}
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated download, wrong file, ...
        raise ValueError(f"SAM checkpoint {path} cannot be read ({type(err).__name__}: {err})") from err
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not any(k.startswith("image_encoder.blocks.") for k in state):
        raise ValueError(f"{path} is not a SAM state dict (no image_encoder.blocks.* tensors)")
    return state, shape


def export_sam(checkpoint: str | Path, out_dir: str | Path, variant: str | None = None,
               arch: dict[str, Any] | None = None, dtype: torch.dtype = torch.float32) -> SamConfig:
    """Checkpoint -> dense directory; loading into `build_sam` first checks every shape and name."""
    from safetensors.torch import save_file

    state, shape = read_checkpoint(checkpoint)
    variant = variant or shape.get("variant") or variant_from_name(checkpoint)
    arch = arch if arch is not None else shape.get("arch")
    config = SamConfig.for_variant(variant, arch)
    model = build_sam(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{checkpoint} does not match SAM {config.variant} with arch {arch or {}}: {err}") from err
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config.to_json(), indent=1))
    return config


def load_sam(model_dir: str | Path, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A dense or pruned SAM saved by this pipeline."""
    from safetensors.torch import load_file

    model_dir = Path(model_dir)
    config = SamConfig.from_json(json.loads((model_dir / "config.json").read_text()))
    model = build_sam(config)
    model.load_state_dict(load_file(str(model_dir / "model.safetensors")), strict=True)
    from ..methods.input_compensation import POOL_FILE, InputPool, attach_input_pool

    if (model_dir / POOL_FILE).is_file():  # an input-compensated run: the pool runs on the patch embeddings
        attach_input_pool(SamAdapter().input_embeddings(model), InputPool.from_file(model_dir / POOL_FILE))
    return model.to(dtype).eval()


class SamAdapter(FamilyAdapter):
    """SAM's image encoder: blocks of [batch, H, W, C] with windowed or global attention."""

    model_type = MODEL_TYPE
    linear_roles = {"attn.qkv": "qkv", "attn.proj": "o", "mlp.lin1": "fc1", "mlp.lin2": "fc2"}

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return model.image_encoder.blocks

    def block_prefix(self, index: int) -> str:
        return f"image_encoder.blocks.{index}."

    def num_blocks(self, config: SamConfig) -> int:
        return config.depth

    def build_block(self, config: SamConfig, index: int) -> nn.Module:
        from segment_anything.modeling.image_encoder import Block

        return Block(
            dim=config.embed_dim, num_heads=config.num_heads, mlp_ratio=config.mlp_ratio, qkv_bias=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6), use_rel_pos=True,
            window_size=0 if index in config.global_attn_indexes else config.window_size,
            input_size=(config.grid_size, config.grid_size),
        )

    def block_kwargs(self, config: Any, index: int, seqlen: int, device: torch.device,
                     dtype: torch.dtype) -> dict[str, Any]:
        return {}  # windows and relative positions live inside each block

    def call_model(self, model: nn.Module, inputs: torch.Tensor) -> None:
        model.image_encoder(inputs)

    # Input compensation, our adaptation of the IC paper's image variant: the pool corrects the
    # patch embeddings ([batch, h, w, C], before the position embedding is added) and the target is
    # the dense encoder's image embedding (the neck's output). A patch embedding depends on the
    # pixels, not on a token id, so the pool cannot fold into a table: it stays a module of its own
    # (ic_pool.safetensors beside the weights), attached by `load_sam`.
    folds_input_pool = False

    def input_embeddings(self, model: nn.Module) -> nn.Module:
        return model.image_encoder.patch_embed

    def input_width(self, model: nn.Module) -> int:
        return model.image_encoder.patch_embed.proj.out_channels

    def final_features(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        return model.image_encoder(inputs)

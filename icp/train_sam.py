"""Train the small SAM that the embedded default prunes (Tables 3 and 6 offline).

    python -m icp.train_sam --device cuda --out icp/assets/shapes-vit-tiny.sam.safetensors

The model is segment-anything's own `Sam` (ImageEncoderViT with windowed and global attention,
PromptEncoder, MaskDecoder), shrunk (`ARCH`), trained from scratch on the synthetic shapes of
`icp.data.shapes` ("train" split; the calibration and held-out splits are never seen). The recipe
is SAM's, simplified: one positive point drawn uniformly inside an instance, three masks out
(multimask), the loss of the best of the three (20 x focal + dice, as in the SAM paper), plus the
mean squared error of the IoU head against each mask's real IoU. AdamW, linear warm-up, cosine
decay, gradient clipping. `DEFAULTS` is the recipe of the shipped weights: 3,500 steps of 32
scenes with up to 8 prompts each, 284 s on one H100 (the scenes are drawn by `--workers` loader
processes; the CPU takes hours). Everything is seeded and each step's batch is a pure function of
(seed, step); the same device and library versions give the same weights up to the GPU's
non-deterministic kernels (a GPU and a CPU give different, equally good ones).

At the end the weights are saved in float16 with their shape in the file's metadata, read back,
and evaluated on the held-out scenes exactly as the workflow evaluates them (COCO-format set,
`icp.evaluate.sam_iou`, the mask SAM scores highest) — the number the default's Table 3 shows
for the dense model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data.images import sam_input
from .data.shapes import scene
from .models.sam import SamConfig, build_sam

# 256-pixel inputs, a 16 x 16 patch grid, 4 x 4 windows, global attention in blocks 2 and 5
ARCH = {
    "embed_dim": 192, "depth": 6, "num_heads": 6, "global_attn_indexes": [2, 5], "image_size": 256,
    "patch_size": 16, "window_size": 4, "prompt_embed_dim": 128, "decoder_mlp_dim": 512, "decoder_heads": 4,
    "iou_head_hidden_dim": 128,
}
DEFAULTS = {"steps": 3500, "images": 32, "prompts": 8, "lr": 8e-4, "warmup": 300, "seed": 0}
EVAL = {"split": "eval", "count": 32, "size": 256}  # the held-out check (the default evaluates these)


def sam_config() -> SamConfig:
    return SamConfig.for_variant("vit_b", ARCH)


def _losses(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-mask focal (alpha 0.25, gamma 2) and dice losses: logits [K, 3, H, W], target [K, 1, H, W]."""
    target = target.expand_as(logits)
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    focal = (ce * (1 - p_t) ** 2 * (0.25 * target + 0.75 * (1 - target))).mean(dim=(2, 3))
    inter = (prob * target).sum(dim=(2, 3))
    dice = 1 - (2 * inter + 1) / (prob.sum(dim=(2, 3)) + target.sum(dim=(2, 3)) + 1)
    return focal, dice


class StepBatches(torch.utils.data.Dataset):
    """Step `i`'s batch: `images` train scenes, preprocessed, and up to `prompts` single-point
    prompts per scene with their instance masks. A pure function of (seed, step), so loader
    workers change only the speed, never the data."""

    def __init__(self, seed: int, steps: int, images: int, prompts: int, size: int):
        self.seed, self.steps, self.images, self.prompts, self.size = seed, steps, images, prompts, size

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        inputs, points, owners, targets = [], [], [], []
        for j in range(self.images):
            image, masks = scene(self.seed, "train", step * self.images + j, self.size)
            rng = np.random.default_rng([self.seed, step, j])
            chosen = rng.choice(len(masks), size=min(self.prompts, len(masks)), replace=False) if masks else []
            height, width = image.shape[:2]
            for k in chosen:
                ys, xs = np.nonzero(masks[k])
                i = int(rng.integers(len(xs)))
                points.append((float(xs[i]), float(ys[i])))  # the longest side is `size`: no rescaling
                owners.append(j)
                # the mask in SAM's padded square frame (image at the top left)
                targets.append(np.pad(masks[k], ((0, self.size - height), (0, self.size - width))))
            inputs.append(sam_input(image, self.size))
        return {"images": torch.stack(inputs), "points": torch.tensor(points, dtype=torch.float32).reshape(-1, 2),
                "owners": torch.tensor(owners, dtype=torch.int64),
                "targets": torch.from_numpy(np.stack(targets) if targets else np.zeros((0, self.size, self.size), bool))}


def decode_prompts(model: torch.nn.Module, embeddings: torch.Tensor, points: torch.Tensor,
                   owners: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Three low-res masks and IoU scores for every prompt of a batch of images in one decoder call.

    SAM's decoder takes one image per call and repeats its embedding once per prompt, then adds
    the dense prompt embedding. Handing it a zero image and each prompt's own image embedding
    folded into the dense term gives exactly the per-image result for all images at once
    (`tests/test_shapes_sam.py` checks it against the per-image calls)."""
    labels = torch.ones(len(points), 1, dtype=torch.int64, device=points.device)
    sparse, dense = model.prompt_encoder(points=(points[:, None, :], labels), boxes=None, masks=None)
    return model.mask_decoder(image_embeddings=torch.zeros_like(embeddings[:1]),
                              image_pe=model.prompt_encoder.get_dense_pe(), sparse_prompt_embeddings=sparse,
                              dense_prompt_embeddings=dense + embeddings[owners], multimask_output=True)


def train(out: Path, steps: int, images: int, prompts: int, lr: float, warmup: int, seed: int,
          device: str, workers: int = 0, log=print) -> dict:
    torch.manual_seed(seed)
    config = sam_config()
    model = build_sam(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup)
                                                 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    size = config.image_size
    batches = torch.utils.data.DataLoader(StepBatches(seed, steps, images, prompts, size), batch_size=None,
                                          num_workers=workers, prefetch_factor=4 if workers else None,
                                          pin_memory=device.startswith("cuda"))
    started = time.perf_counter()
    for step, batch in enumerate(batches):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        embeddings = model.image_encoder(batch["images"])
        low_res, iou_pred = decode_prompts(model, embeddings, batch["points"], batch["owners"])
        logits = F.interpolate(low_res, (size, size), mode="bilinear", align_corners=False)
        target = batch["targets"][:, None].float()
        focal, dice = _losses(logits, target)
        per_mask = 20 * focal + dice
        best = per_mask.argmin(dim=1)
        with torch.no_grad():
            pred, truth = logits > 0, target > 0.5
            real_iou = (pred & truth).sum(dim=(2, 3)).float() / (pred | truth).sum(dim=(2, 3)).float().clamp(min=1)
        loss = per_mask.gather(1, best[:, None]).mean() + F.mse_loss(iou_pred, real_iou)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"step {step + 1}/{steps}: loss {loss.detach().item():.4f} ({time.perf_counter() - started:.0f}s)")
    seconds = time.perf_counter() - started
    save(model.eval(), out, {"seed": seed, "steps": steps, "images_per_step": images, "prompts_per_image": prompts,
                             "lr": lr, "warmup": warmup, "train_seconds": round(seconds, 1), "device": device})
    return {"train_seconds": seconds}


def save(model: torch.nn.Module, out: Path, recipe: dict) -> str:
    """float16 safetensors with the arch and the recipe in its metadata; returns its sha256."""
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(torch.float16).contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(out), metadata={"variant": "vit_b", "arch": json.dumps(ARCH), "recipe": json.dumps(recipe)})
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    sums = out.parent / "SHA256SUMS"
    lines = [line for line in (sums.read_text().splitlines() if sums.exists() else []) if not line.endswith(out.name)]
    sums.write_text("\n".join([*lines, f"{digest}  {out.name}"]) + "\n")
    return digest


def held_out_iou(weights: Path, device: str = "cpu", count: int = EVAL["count"], log=None) -> dict:
    """Dense single-point mIoU of the saved weights on the first `count` held-out scenes, as the
    workflow computes it (the default's shapes-coco image set)."""
    from .data.shapes import write_shape_set
    from .evaluate.sam_iou import annotated_images, single_point_iou
    from .models.sam import export_sam, load_sam

    with tempfile.TemporaryDirectory() as tmp:
        export_sam(weights, Path(tmp) / "dense")
        model = load_sam(Path(tmp) / "dense")
        image_set = write_shape_set(Path(tmp) / "eval", EVAL["split"], count, 0, EVAL["size"], "coco")
        return single_point_iou(model, annotated_images(image_set), device, "best_score", log)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="icp/assets/shapes-vit-tiny.sam.safetensors")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None,
                        help="processes drawing the scenes (default: 12 beside a GPU, none on the CPU)")
    parser.add_argument("--no-eval", action="store_true", help="skip the held-out check (speed probes)")
    for key, value in DEFAULTS.items():
        parser.add_argument(f"--{key}", type=type(value), default=value)
    a = parser.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    log = lambda m: print(f"[train_sam {time.strftime('%H:%M:%S')}] {m}", flush=True)  # noqa: E731
    out = Path(a.out)
    workers = a.workers if a.workers is not None else (12 if a.device.startswith("cuda") else 0)
    result = train(out, a.steps, a.images, a.prompts, a.lr, a.warmup, a.seed, a.device, workers, log)
    log(f"trained in {result['train_seconds']:.0f}s on {a.device}; {out} ({out.stat().st_size / 2**20:.2f} MiB)")
    if a.no_eval:
        return
    iou = held_out_iou(out)
    log(f"held-out dense single-point mIoU {100 * iou['value']:.2f} over {iou['instances']} instances")


if __name__ == "__main__":
    main()

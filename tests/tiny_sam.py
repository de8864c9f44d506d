"""A tiny random SAM checkpoint and small synthetic images with COCO and SA-1B annotations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from icp.models.sam import SamConfig, build_sam

# 64-pixel inputs, 4x4 patch grid, 2x2 windows, one global-attention block
TINY_SAM_ARCH = {
    "embed_dim": 32, "depth": 3, "num_heads": 2, "global_attn_indexes": [2], "image_size": 64, "patch_size": 16,
    "window_size": 2, "prompt_embed_dim": 32, "decoder_mlp_dim": 64, "decoder_heads": 2, "iou_head_hidden_dim": 32,
}


def tiny_sam_config() -> SamConfig:
    return SamConfig.for_variant("vit_b", TINY_SAM_ARCH)


def write_tiny_sam(path: Path, seed: int = 0) -> Path:
    """A random tiny SAM saved like the official checkpoints (a plain state dict in a .pth)."""
    torch.manual_seed(seed)
    model = build_sam(tiny_sam_config())
    # small random relative-position tables, so windowed and global blocks really differ
    for name, p in model.named_parameters():
        if "rel_pos" in name:
            p.data.normal_(0, 0.02)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def _shapes(rng: np.random.Generator, height: int, width: int, count: int) -> list[np.ndarray]:
    masks = []
    yy, xx = np.mgrid[:height, :width]
    for k in range(count):
        cy, cx = rng.integers(8, height - 8), rng.integers(8, width - 8)
        ry, rx = rng.integers(4, 10), rng.integers(4, 10)
        if k % 2 == 0:
            m = (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
        else:
            m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        masks.append(m)
    return masks


def _paint(rng: np.random.Generator, masks: list[np.ndarray], height: int, width: int) -> np.ndarray:
    image = np.full((height, width, 3), 30, dtype=np.uint8) + rng.integers(0, 20, (height, width, 3), dtype=np.uint8)
    for m in masks:
        image[m] = rng.integers(80, 255, 3, dtype=np.uint8)
    return image


def write_image_sets(root: Path, n_images: int = 4, seed: int = 0) -> dict[str, dict]:
    """SA-1B-style folder, COCO-style folder + annotations, and a plain calibration folder.
    Returns the three image-set config entries."""
    rng = np.random.default_rng(seed)
    sa1b, coco_dir, calib = root / "sa1b", root / "coco" / "images", root / "calib"
    for d in (sa1b, coco_dir, calib):
        d.mkdir(parents=True, exist_ok=True)
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "thing"}]}
    ann_id = 1
    for i in range(n_images):
        height, width = 48, 40 + 8 * (i % 2)  # non-square: exercises SAM's resize + pad
        masks = _shapes(rng, height, width, 3)
        image = _paint(rng, masks, height, width)
        Image.fromarray(image).save(sa1b / f"sa_{i + 1}.jpg", quality=95)
        Image.fromarray(image).save(coco_dir / f"{i + 1:012d}.png")
        Image.fromarray(_paint(rng, _shapes(rng, height, width, 2), height, width)).save(calib / f"c_{i}.png")
        sa_anns = []
        for k, m in enumerate(masks):
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            ys, xs = np.nonzero(m)
            sa_anns.append({"id": 100 * i + k, "segmentation": {"size": list(rle["size"]), "counts": rle["counts"].decode()},
                            "area": int(m.sum()), "point_coords": [[float(xs.mean()), float(ys.mean())]]})
            if k % 2 == 0:  # rectangles as polygons
                y0, x0, y1, x1 = ys.min(), xs.min(), ys.max() + 1, xs.max() + 1
                segmentation = [[float(x0), float(y0), float(x1), float(y0), float(x1), float(y1), float(x0), float(y1)]]
            else:  # ellipses as uncompressed RLE
                segmentation = {"size": [height, width], "counts": _uncompressed_counts(m)}
            coco["annotations"].append({"id": ann_id, "image_id": i + 1, "category_id": 1, "segmentation": segmentation,
                                        "area": float(m.sum()), "bbox": [0, 0, 1, 1], "iscrowd": 0})
            ann_id += 1
        # one crowd region per image: never evaluated
        crowd = np.zeros((height, width), bool)
        crowd[:2, :2] = True
        coco["annotations"].append({"id": ann_id, "image_id": i + 1, "category_id": 1, "iscrowd": 1, "area": 4.0, "bbox": [0, 0, 2, 2],
                                    "segmentation": {"size": [height, width], "counts": _uncompressed_counts(crowd)}})
        ann_id += 1
        coco["images"].append({"id": i + 1, "file_name": f"{i + 1:012d}.png", "height": height, "width": width})
        (sa1b / f"sa_{i + 1}.json").write_text(json.dumps({
            "image": {"image_id": i + 1, "file_name": f"sa_{i + 1}.jpg", "height": height, "width": width},
            "annotations": sa_anns}))
    annotations = root / "coco" / "instances.json"
    annotations.write_text(json.dumps(coco))
    return {
        "sa1b": {"source": "sa1b", "dir": str(sa1b), "label": "SA-1B"},
        "coco": {"source": "coco", "annotations": str(annotations), "images": str(coco_dir), "label": "COCO"},
        "calib": {"source": "folder", "dir": str(calib)},
    }


def _uncompressed_counts(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE: run lengths of the column-major mask, starting with a run of zeros."""
    flat = mask.astype(np.uint8).flatten(order="F")
    counts, current, run = [], 0, 0
    for v in flat:
        if v != current:
            counts.append(run)
            current, run = v, 0
        run += 1
    counts.append(run)
    return counts

"""A deterministic synthetic image set for SAM: seeded scenes of overlapping shapes (ellipses,
polygons, rings, thin bars) with texture and noise, one instance mask per visible shape.

It stands in for COCO and SA-1B where neither can be had (the embedded default): the same scenes
are written with COCO-format annotations (pycocotools RLE, one JSON for the set) or as SA-1B-style
pairs (``sa_<n>.jpg`` + ``sa_<n>.json``), so they travel through the very readers the real sets use.

Splits draw from independent random streams of one seed, so held-out scenes ("eval", "eval-sa1b")
are never the scenes a model was trained or calibrated on ("train", "calib").
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

SPLITS = {"train": 0, "calib": 1, "eval": 2, "eval-sa1b": 3}
FORMATS = ("coco", "sa1b", "folder")
MIN_AREA = 48  # pixels an instance must keep visible after occlusion


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    if split not in SPLITS:
        raise ValueError(f"unknown shapes split {split!r}; known: {sorted(SPLITS)}")
    return np.random.default_rng([seed, SPLITS[split], index])


def _shape_mask(rng: np.random.Generator, kind: str, height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    scale = min(height, width)
    cy, cx = rng.uniform(0.15, 0.85) * height, rng.uniform(0.15, 0.85) * width
    angle = rng.uniform(0, math.pi)
    cos, sin = math.cos(angle), math.sin(angle)
    u, v = (xx - cx) * cos + (yy - cy) * sin, -(xx - cx) * sin + (yy - cy) * cos  # rotated frame
    if kind == "ellipse":
        a, b = rng.uniform(0.06, 0.2) * scale, rng.uniform(0.05, 0.16) * scale
        return (u / a) ** 2 + (v / b) ** 2 <= 1
    if kind == "ring":
        outer = rng.uniform(0.09, 0.18) * scale
        inner = outer * rng.uniform(0.45, 0.7)
        r = np.sqrt(u ** 2 + (v * rng.uniform(0.8, 1.25)) ** 2)
        return (r <= outer) & (r >= inner)
    if kind == "bar":
        length, thickness = rng.uniform(0.25, 0.6) * scale, rng.uniform(0.025, 0.05) * scale
        return (np.abs(u) <= length / 2) & (np.abs(v) <= thickness / 2)
    # polygon: 3-7 vertices at jittered angles and radii, filled by the even-odd rule
    n = int(rng.integers(3, 8))
    angles = np.sort(rng.uniform(0, 2 * math.pi, n))
    radii = rng.uniform(0.06, 0.18, n) * scale
    px, py = cx + radii * np.cos(angles), cy + radii * np.sin(angles)
    inside = np.zeros((height, width), dtype=bool)
    for i in range(n):
        x1, y1, x2, y2 = px[i], py[i], px[(i + 1) % n], py[(i + 1) % n]
        crosses = (y1 > yy) != (y2 > yy)
        x_at = (x2 - x1) * (yy - y1) / np.where(y2 == y1, 1e-9, y2 - y1) + x1
        inside ^= crosses & (xx < x_at)
    return inside


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A colour with stripes or speckle: [H, W, 3] float in 0-255."""
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    base = rng.uniform(40, 235, 3)
    if rng.random() < 0.5:
        period, angle = rng.uniform(4, 12), rng.uniform(0, math.pi)
        wave = np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period)[..., None]
        return base + rng.uniform(10, 35) * wave
    return base + rng.normal(0, rng.uniform(5, 20), (height, width, 1))


def render_scene(rng: np.random.Generator, height: int, width: int, shapes: tuple[int, int] = (3, 7)) -> tuple[np.ndarray, list[np.ndarray]]:
    """(image [H, W, 3] uint8, visible instance masks [H, W] bool) of one scene; later shapes
    occlude earlier ones, and an instance left with fewer than MIN_AREA pixels is dropped."""
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    g = rng.uniform(-0.5, 0.5, 2)
    background = rng.uniform(30, 200, 3) + 60 * (g[0] * yy / height + g[1] * xx / width)[..., None]
    image = background + rng.normal(0, 6, (height, width, 3))
    owner = np.full((height, width), -1, dtype=np.int32)
    for k in range(int(rng.integers(shapes[0], shapes[1] + 1))):
        kind = ("ellipse", "polygon", "ring", "bar")[int(rng.integers(4))]
        mask = _shape_mask(rng, kind, height, width)
        image[mask] = _texture(rng, height, width)[mask]
        owner[mask] = k
    image += rng.normal(0, 4, image.shape)  # sensor noise over everything
    masks = [owner == k for k in range(owner.max() + 1)]
    return np.clip(image, 0, 255).astype(np.uint8), [m for m in masks if m.sum() >= MIN_AREA]


def scene_size(rng: np.random.Generator, size: int) -> tuple[int, int]:
    """Height and width: the longest side `size`, the other 75-100 % of it (SAM pads to a square)."""
    short = int(size * rng.uniform(0.75, 1.0))
    return (size, short) if rng.random() < 0.5 else (short, size)


def scene(seed: int, split: str, index: int, size: int) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = scene_rng(seed, split, index)
    height, width = scene_size(rng, size)
    return render_scene(rng, height, width)


def _annotation(mask: np.ndarray, ann_id: int) -> dict[str, Any]:
    """id, area, bbox (x, y, w, h) and the mask as COCO RLE (pycocotools), as both formats store them."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    ys, xs = np.nonzero(mask)
    return {"id": ann_id, "area": int(mask.sum()),
            "bbox": [int(xs.min()), int(ys.min()), int(np.ptp(xs) + 1), int(np.ptp(ys) + 1)],
            "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}}


def write_shape_set(out_dir: str | Path, split: str, count: int, seed: int = 0, size: int = 256,
                    fmt: str = "coco") -> dict[str, Any]:
    """Write `count` scenes of `split` under `out_dir`; returns the image-set entry that reads them
    (``{source: coco, annotations, images}``, ``{source: sa1b, dir}`` or ``{source: folder, dir}``)."""
    from PIL import Image

    if fmt not in FORMATS:
        raise ValueError(f"unknown shapes format {fmt!r}; known: {FORMATS}")
    out = Path(out_dir)
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    coco: dict[str, Any] = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "shape"}]}
    for i in range(count):
        image, masks = scene(seed, split, i, size)
        height, width = image.shape[:2]
        if fmt == "sa1b":
            name = f"sa_{i + 1}.jpg"
            Image.fromarray(image).save(images_dir / name, quality=95)
            anns = [_annotation(m, 1000 * (i + 1) + k) for k, m in enumerate(masks)]
            record = {"image": {"image_id": i + 1, "file_name": name, "height": height, "width": width},
                      "annotations": anns}
            (images_dir / f"sa_{i + 1}.json").write_text(json.dumps(record))
            continue
        name = f"{i + 1:012d}.png"
        Image.fromarray(image).save(images_dir / name)
        coco["images"].append({"id": i + 1, "file_name": name, "height": height, "width": width})
        coco["annotations"] += [{**_annotation(m, 1000 * (i + 1) + k), "image_id": i + 1, "category_id": 1, "iscrowd": 0}
                                for k, m in enumerate(masks)]
    if fmt == "coco":
        (out / "annotations.json").write_text(json.dumps(coco))
        return {"source": "coco", "annotations": str(out / "annotations.json"), "images": str(images_dir)}
    return {"source": "sa1b" if fmt == "sa1b" else "folder", "dir": str(images_dir)}

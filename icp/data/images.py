"""Image sets for SAM: SA-1B folders, COCO, or any folder of images, and SAM's input transform.

An image set is a config entry:
- ``{source: sa1b, dir: .../sa_000001}``: SA-1B's ``sa_<id>.jpg`` + ``sa_<id>.json`` pairs,
- ``{source: coco, annotations: .../instances_val2017.json, images: .../val2017}``,
- ``{source: folder, dir: ...}``: any ``.jpg``/``.jpeg``/``.png`` files (calibration only).
Files are always taken in sorted order, so subsets "by count" are deterministic.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..models.sam import PIXEL_MEAN, PIXEL_STD

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _require_dir(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{what}: {path} is not a directory")
    return path


def image_paths(image_set: dict[str, Any]) -> list[Path]:
    """Every image of a set, sorted."""
    source = image_set.get("source")
    if source in ("sa1b", "folder"):
        folder = _require_dir(image_set["dir"], f"image set ({source})")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    elif source == "coco":
        folder = _require_dir(image_set["images"], "image set (coco) images")
        coco = json.loads(Path(image_set["annotations"]).read_text())
        files = sorted(folder / img["file_name"] for img in coco["images"])
    else:
        raise ValueError(f"unknown image set source {source!r}; known: sa1b, coco, folder")
    if not files:
        raise FileNotFoundError(f"image set {image_set} holds no images")
    return files


def load_rgb(path: str | Path) -> np.ndarray:
    """[H, W, 3] uint8 RGB."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def sam_input(image: np.ndarray, image_size: int) -> torch.Tensor:
    """SAM's own preprocessing: longest side resized to `image_size`, normalised, zero-padded to a
    square. Returns [3, image_size, image_size] float32."""
    from segment_anything.utils.transforms import ResizeLongestSide

    resized = ResizeLongestSide(image_size).apply_image(image)
    x = torch.as_tensor(resized).permute(2, 0, 1).float()
    x = (x - torch.tensor(PIXEL_MEAN)[:, None, None]) / torch.tensor(PIXEL_STD)[:, None, None]
    return F.pad(x, (0, image_size - x.shape[2], 0, image_size - x.shape[1]))


def calibration_images(image_set: dict[str, Any], nsamples: int, seed: int, image_size: int) -> torch.Tensor:
    """`nsamples` images drawn with `seed` from the set, preprocessed: [nsamples, 3, S, S]."""
    files = image_paths(image_set)
    if nsamples > len(files):
        raise ValueError(f"asked for {nsamples} calibration images, but the set has only {len(files)}")
    chosen = sorted(random.Random(seed).sample(files, nsamples))
    return torch.stack([sam_input(load_rgb(f), image_size) for f in chosen])

"""Single-point IoU of a (pruned) SAM on COCO or SA-1B instance masks.

For every ground-truth instance, SAM gets one positive point and predicts a mask; the score is
the IoU between that mask and the instance, averaged over instances (mIoU).

- The point: SA-1B's own ``point_coords[0]`` (the point its annotators' model was prompted with)
  when the annotation has one; otherwise a pixel drawn uniformly from the mask with
  ``numpy.random.default_rng([seed, annotation id])`` (COCO always takes this path). Either way
  the point lies inside the mask and does not depend on the model or on evaluation order.
- The mask: ``multimask_output=True`` and the mask SAM itself scores highest (its predicted IoU),
  which is how the SAM paper reports single-point results; ``oracle`` (best of the three against
  the ground truth) and ``single`` (``multimask_output=False``) are there for comparison.
- Subsets by count: the first ``max_images`` images in id / file-name order, and in each the
  first ``max_instances`` annotations by id. COCO crowd annotations (``iscrowd``) are skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..data.images import load_rgb

SELECTIONS = ("best_score", "oracle", "single")


@dataclass
class Instance:
    ann_id: int
    mask: np.ndarray  # [H, W] bool, ground truth
    point: tuple[float, float]  # (x, y) in original image pixels


@dataclass
class AnnotatedImage:
    path: Path
    instances: list[Instance]


def mask_iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """|pred ∩ truth| / |pred ∪ truth| of two boolean masks (1.0 when both are empty)."""
    pred, truth = pred.astype(bool), truth.astype(bool)
    if pred.shape != truth.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {truth.shape}")
    union = np.logical_or(pred, truth).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, truth).sum() / union)


def interior_point(mask: np.ndarray, seed: int, key: int) -> tuple[float, float]:
    """A pixel (x, y) of `mask`, drawn with a generator seeded by (seed, key)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        raise ValueError(f"annotation {key} has an empty mask")
    i = int(np.random.default_rng([seed, key]).integers(len(xs)))
    return float(xs[i]), float(ys[i])


def coco_images(annotations: str | Path, images: str | Path, max_images: int | None, max_instances: int | None,
                seed: int) -> list[AnnotatedImage]:
    """COCO instances through pycocotools (polygons and RLE both via `annToMask`)."""
    from pycocotools.coco import COCO

    coco = COCO(str(annotations))
    out = []
    for image_id in sorted(coco.getImgIds())[:max_images]:
        info = coco.loadImgs(image_id)[0]
        anns = sorted((a for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id)) if not a.get("iscrowd", 0)),
                      key=lambda a: a["id"])
        instances = []
        for ann in anns:
            mask = coco.annToMask(ann).astype(bool)
            if mask.any():
                instances.append(Instance(int(ann["id"]), mask, interior_point(mask, seed, int(ann["id"]))))
            if max_instances is not None and len(instances) == max_instances:
                break
        if instances:
            out.append(AnnotatedImage(Path(images) / info["file_name"], instances))
    return out


def sa1b_images(folder: str | Path, max_images: int | None, max_instances: int | None, seed: int) -> list[AnnotatedImage]:
    """SA-1B: one JSON per image (``{"image": {...}, "annotations": [...]}``), masks as COCO RLE."""
    from pycocotools import mask as mask_utils

    folder = Path(folder)
    files = sorted(folder.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no SA-1B annotation files (*.json) in {folder}")
    out = []
    for file in files[:max_images]:
        data = json.loads(file.read_text())
        anns = sorted(data["annotations"], key=lambda a: a["id"])
        instances = []
        for ann in anns[:max_instances]:
            rle = dict(ann["segmentation"])
            if isinstance(rle["counts"], str):
                rle["counts"] = rle["counts"].encode("ascii")
            mask = mask_utils.decode(rle).astype(bool)
            if not mask.any():
                continue
            coords = ann.get("point_coords")
            point = (float(coords[0][0]), float(coords[0][1])) if coords else interior_point(mask, seed, int(ann["id"]))
            instances.append(Instance(int(ann["id"]), mask, point))
        if instances:
            out.append(AnnotatedImage(folder / data["image"]["file_name"], instances))
    return out


def annotated_images(image_set: dict[str, Any], seed: int = 0) -> list[AnnotatedImage]:
    source = image_set.get("source")
    limits = (image_set.get("max_images"), image_set.get("max_instances"))
    if source == "coco":
        return coco_images(image_set["annotations"], image_set["images"], *limits, seed)
    if source == "sa1b":
        return sa1b_images(image_set["dir"], *limits, seed)
    raise ValueError(f"image set source {source!r} has no annotations to evaluate; use sa1b or coco")


@torch.no_grad()
def single_point_iou(model: torch.nn.Module, images: list[AnnotatedImage], device: str = "cpu",
                     selection: str = "best_score", log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Mean single-point IoU of `model` (a segment-anything Sam) over every instance of `images`."""
    from segment_anything import SamPredictor

    if selection not in SELECTIONS:
        raise ValueError(f"unknown mask selection {selection!r}; choose one of {SELECTIONS}")
    predictor = SamPredictor(model.to(device).eval())
    ious = []
    for n, image in enumerate(images):
        predictor.set_image(load_rgb(image.path))
        for inst in image.instances:
            masks, scores, _ = predictor.predict(
                point_coords=np.array([inst.point], dtype=np.float32), point_labels=np.array([1]),
                multimask_output=selection != "single",
            )
            candidates = [mask_iou(m, inst.mask) for m in masks]
            pick = int(np.argmax(candidates)) if selection == "oracle" else int(np.argmax(scores))
            ious.append(candidates[pick])
        if log:
            log(f"image {n + 1}/{len(images)}: running mIoU {np.mean(ious):.4f} over {len(ious)} instances")
    if not ious:
        raise ValueError("no instances to evaluate")
    return {"metric": "iou", "value": float(np.mean(ious)), "instances": len(ious), "images": len(images),
            "selection": selection}

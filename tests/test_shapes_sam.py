"""The synthetic shapes image sets and the small SAM trained on them (shipped in icp/assets)."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from icp.data.shapes import scene, write_shape_set

ASSETS = Path(__file__).resolve().parent.parent / "icp" / "assets"
WEIGHTS = ASSETS / "shapes-vit-tiny.sam.safetensors"


def test_shipped_weights_match_their_checksum_and_size():
    listed = dict(reversed(line.split()) for line in (ASSETS / "SHA256SUMS").read_text().splitlines())
    assert listed[WEIGHTS.name] == hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()
    assert WEIGHTS.stat().st_size <= 10 * 2**20


def test_corrupt_weights_are_refused_before_use(tmp_path):
    from icp.models.sam import read_checkpoint

    copy = tmp_path / WEIGHTS.name
    shutil.copy(WEIGHTS, copy)
    shutil.copy(ASSETS / "SHA256SUMS", tmp_path / "SHA256SUMS")
    read_checkpoint(copy)  # intact: fine
    data = bytearray(copy.read_bytes())
    data[-100] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="is corrupt: sha256"):
        read_checkpoint(copy)


@pytest.mark.parametrize("fmt", ["coco", "sa1b"])
def test_shape_sets_round_trip_through_pycocotools(tmp_path, fmt):
    from icp.evaluate.sam_iou import annotated_images

    a = write_shape_set(tmp_path / "a", "eval", 3, seed=0, size=96, fmt=fmt)
    b = write_shape_set(tmp_path / "b", "eval", 3, seed=0, size=96, fmt=fmt)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    for rel in files_a:  # deterministic: the same bytes every time
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    images = annotated_images(a)
    assert len(images) == 3
    for i, image in enumerate(images):
        pixels, masks = scene(0, "eval", i, 96)
        assert [inst.mask.shape for inst in image.instances] == [pixels.shape[:2]] * len(masks)
        for inst, mask in zip(image.instances, masks):
            assert np.array_equal(inst.mask, mask)  # RLE -> pycocotools -> the very masks drawn
            x, y = inst.point
            assert mask[int(y), int(x)]  # the prompt lies inside its instance
    assert b["source"] == fmt


def test_splits_are_disjoint_streams():
    train, held_out = scene(0, "train", 0, 64)[0], scene(0, "eval", 0, 64)[0]
    assert train.shape != held_out.shape or not np.array_equal(train, held_out)
    assert np.array_equal(scene(0, "eval", 5, 64)[0], scene(0, "eval", 5, 64)[0])


def test_trained_sam_segments_held_out_shapes(tmp_path):
    """A few held-out scenes on the CPU: the shipped model's single-point IoU is far above chance."""
    from icp.evaluate.sam_iou import annotated_images, single_point_iou
    from icp.models.sam import export_sam, load_sam

    export_sam(WEIGHTS, tmp_path / "dense")
    model = load_sam(tmp_path / "dense")
    images = annotated_images(write_shape_set(tmp_path / "eval", "eval", 6, seed=0, size=256, fmt="coco"))
    result = single_point_iou(model, images)
    assert result["instances"] >= 20
    assert result["value"] >= 0.70, result  # 0.755 for the shipped weights; chance (an untrained model) is ~0.02
    recipe = json.loads(__import__("safetensors").safe_open(str(WEIGHTS), "pt").metadata()["recipe"])
    assert recipe["seed"] == 0 and recipe["steps"] > 0


def test_workflow_commands_give_the_training_scripts_number(tmp_path):
    """The commands the workflow's rules run (export-dense from the package source, shape-images,
    sam-iou) give exactly the held-out IoU the training script reports, on the same scenes."""
    from icp.cli import main
    from icp.experiments import concrete_image_set
    from icp.train_sam import held_out_iou

    spec = {"source": "shapes", "split": "eval", "count": 3, "size": 256, "format": "coco", "seed": 0}
    config = {"image_sets": {"shapes-coco": spec}}
    root = str(tmp_path / "results")
    concrete = concrete_image_set(config, "shapes-coco", root)
    main(["export-dense", "--source", "pkg:icp/assets/shapes-vit-tiny.sam.safetensors", "--out", str(tmp_path / "dense")])
    main(["shape-images", "--spec", json.dumps(spec), "--out-dir", concrete["images"].rsplit("/", 1)[0]])
    main(["sam-iou", "--model-dir", str(tmp_path / "dense"), "--image-set", json.dumps(concrete),
          "--device", "cpu", "--out", str(tmp_path / "iou.json")])
    workflow = json.loads((tmp_path / "iou.json").read_text())
    script = held_out_iou(WEIGHTS, count=3)
    assert workflow["value"] == script["value"] and workflow["instances"] == script["instances"]


def test_batched_prompt_decoding_equals_per_image_calls():
    """The training script decodes every prompt of a batch in one call; SAM's own per-image calls
    must give the same masks and scores."""
    import torch

    from icp.models.sam import build_sam
    from icp.train_sam import StepBatches, decode_prompts, sam_config

    torch.manual_seed(0)
    model = build_sam(sam_config()).eval()
    batch = StepBatches(seed=0, steps=1, images=2, prompts=3, size=256)[0]
    assert batch["targets"].shape == (len(batch["points"]), 256, 256) and set(batch["owners"].tolist()) == {0, 1}
    with torch.no_grad():
        embeddings = model.image_encoder(batch["images"])
        masks, scores = decode_prompts(model, embeddings, batch["points"], batch["owners"])
        for j in range(2):
            mine = batch["owners"] == j
            points = batch["points"][mine][:, None, :]
            sparse, dense = model.prompt_encoder(points=(points, torch.ones(len(points), 1, dtype=torch.int64)),
                                                 boxes=None, masks=None)
            ref_masks, ref_scores = model.mask_decoder(image_embeddings=embeddings[j : j + 1],
                                                       image_pe=model.prompt_encoder.get_dense_pe(),
                                                       sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                                       multimask_output=True)
            torch.testing.assert_close(masks[mine], ref_masks, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(scores[mine], ref_scores, rtol=1e-5, atol=1e-5)
    assert all(batch["targets"][i, int(y), int(x)] for i, (x, y) in enumerate(batch["points"].tolist()))  # inside

"""SAM: the IoU metric, mask decoding, the encoder adapter, pruning through the engine, evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("segment_anything")
pytest.importorskip("pycocotools")

from pycocotools import mask as mask_utils  # noqa: E402

from icp.checks import verify_pruned  # noqa: E402
from icp.engine import BlockRunner  # noqa: E402
from icp.evaluate import sam_iou  # noqa: E402
from icp.models import adapter_for  # noqa: E402
from icp.models.loading import CheckpointReader, export_dense, load_config, load_model  # noqa: E402
from icp.models.sam import SamConfig, read_checkpoint, variant_from_name  # noqa: E402
from tiny_sam import TINY_SAM_ARCH, write_image_sets, write_tiny_sam  # noqa: E402


@pytest.fixture(scope="module")
def sam_assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sam")
    checkpoint = write_tiny_sam(root / "sam_vit_b_tiny.pth")
    dense = root / "dense"
    export_dense(str(checkpoint), dense, arch=TINY_SAM_ARCH)
    return {"root": root, "checkpoint": checkpoint, "dense": dense, "sets": write_image_sets(root / "images")}


# ---- metric and decoding -------------------------------------------------------------------


def test_mask_iou_on_hand_made_masks():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2, :2] = True  # 4 pixels
    b[1:3, 1:3] = True  # 4 pixels, 1 shared
    assert sam_iou.mask_iou(a, b) == pytest.approx(1 / 7)
    assert sam_iou.mask_iou(a, a) == 1.0
    assert sam_iou.mask_iou(a, ~a) == 0.0
    assert sam_iou.mask_iou(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0
    with pytest.raises(ValueError, match="shapes differ"):
        sam_iou.mask_iou(a, np.zeros((3, 3), bool))


def test_rle_round_trip_and_polygon_decoding(sam_assets):
    rng = np.random.default_rng(0)
    mask = rng.random((37, 29)) > 0.6
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    as_json = {"size": rle["size"], "counts": rle["counts"].decode()}  # SA-1B stores counts as text
    back = mask_utils.decode({**as_json, "counts": as_json["counts"].encode()}).astype(bool)
    assert np.array_equal(back, mask)

    # the readers decode polygons, uncompressed and compressed RLE into the masks they were made from
    sa1b = sam_iou.sa1b_images(sam_assets["sets"]["sa1b"]["dir"], None, None, seed=0)
    coco = sam_iou.coco_images(sam_assets["sets"]["coco"]["annotations"], sam_assets["sets"]["coco"]["images"], None, None, seed=0)
    assert len(sa1b) == len(coco) == 4
    for s_img, c_img in zip(sa1b, coco):
        assert len(s_img.instances) == 3 and len(c_img.instances) == 3  # the crowd region is skipped
        for k, (s, c) in enumerate(zip(s_img.instances, c_img.instances)):
            if k % 2 == 1:  # uncompressed RLE: exact
                assert np.array_equal(s.mask, c.mask)
            else:  # polygon around the same rectangle: pycocotools rasterises its edges
                assert sam_iou.mask_iou(s.mask, c.mask) > 0.75


def test_prompt_points_are_inside_and_deterministic(sam_assets):
    coco = sam_iou.coco_images(sam_assets["sets"]["coco"]["annotations"], sam_assets["sets"]["coco"]["images"], 2, 2, seed=0)
    again = sam_iou.coco_images(sam_assets["sets"]["coco"]["annotations"], sam_assets["sets"]["coco"]["images"], 2, 2, seed=0)
    other = sam_iou.coco_images(sam_assets["sets"]["coco"]["annotations"], sam_assets["sets"]["coco"]["images"], 2, 2, seed=1)
    assert [len(i.instances) for i in coco] == [2, 2]
    for img, img2, img3 in zip(coco, again, other):
        for a, b, c in zip(img.instances, img2.instances, img3.instances):
            x, y = a.point
            assert a.mask[int(y), int(x)]
            assert a.point == b.point
    assert any(a.point != c.point for img, img3 in zip(coco, other) for a, c in zip(img.instances, img3.instances))
    # SA-1B uses its own point_coords (the mask centroid in the test data)
    sa1b = sam_iou.sa1b_images(sam_assets["sets"]["sa1b"]["dir"], 1, None, seed=0)
    ys, xs = np.nonzero(sa1b[0].instances[0].mask)
    assert sa1b[0].instances[0].point == pytest.approx((xs.mean(), ys.mean()))


class _FakePredictor:
    """Returns three masks: the ground truth shifted, the exact ground truth, and nothing."""

    truth: np.ndarray

    def __init__(self, model):
        pass

    def set_image(self, image):
        pass

    def predict(self, point_coords, point_labels, multimask_output):
        gt = _FakePredictor.truth
        masks = np.stack([np.roll(gt, 2, axis=1), gt, np.zeros_like(gt)])
        scores = np.array([0.9, 0.5, 0.1])  # the model "prefers" the shifted mask
        return (masks, scores, None) if multimask_output else (masks[:1], scores[:1], None)


def test_mask_selection_rules(monkeypatch, tmp_path):
    import segment_anything

    gt = np.zeros((10, 10), bool)
    gt[2:6, 2:6] = True
    _FakePredictor.truth = gt
    monkeypatch.setattr(segment_anything, "SamPredictor", _FakePredictor)
    monkeypatch.setattr(sam_iou, "load_rgb", lambda path: np.zeros((10, 10, 3), np.uint8))
    images = [sam_iou.AnnotatedImage(tmp_path / "x.png", [sam_iou.Instance(1, gt, (3.0, 3.0))])]
    shifted = sam_iou.mask_iou(np.roll(gt, 2, axis=1), gt)
    model = torch.nn.Linear(1, 1)
    assert sam_iou.single_point_iou(model, images, selection="best_score")["value"] == pytest.approx(shifted)
    assert sam_iou.single_point_iou(model, images, selection="oracle")["value"] == 1.0
    assert sam_iou.single_point_iou(model, images, selection="single")["value"] == pytest.approx(shifted)
    with pytest.raises(ValueError, match="unknown mask selection"):
        sam_iou.single_point_iou(model, images, selection="best")


# ---- checkpoints and the adapter -----------------------------------------------------------


def test_variant_from_official_names():
    assert variant_from_name("ckpt/sam_vit_h_4b8939.pth") == "vit_h"
    assert variant_from_name("sam_vit_l_0b3195.pth") == "vit_l"
    with pytest.raises(ValueError, match="variant"):
        variant_from_name("model.pth")
    cfg = SamConfig.for_variant("vit_l")
    assert (cfg.embed_dim, cfg.depth, cfg.global_attn_indexes) == (1024, 24, [5, 11, 17, 23])
    with pytest.raises(ValueError, match="unknown SAM arch keys"):
        SamConfig.for_variant("vit_b", {"depht": 3})


def test_bad_checkpoints_are_named(tmp_path, sam_assets):
    broken = tmp_path / "sam_vit_b_broken.pth"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read"):
        read_checkpoint(broken)
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "sam_vit_b_missing.pth")
    # a real checkpoint of another shape
    with pytest.raises(ValueError, match="does not match SAM vit_b"):
        export_dense(str(sam_assets["checkpoint"]), tmp_path / "out", arch={**TINY_SAM_ARCH, "embed_dim": 64})


def test_blockwise_encoder_equals_whole_encoder(sam_assets):
    model, tokenizer = load_model(str(sam_assets["dense"]))
    assert tokenizer is None
    config = load_config(sam_assets["dense"])
    adapter = adapter_for(config.model_type)
    images = torch.randn(3, 3, 64, 64)
    from icp.activations import block0_inputs

    hidden = block0_inputs(model, adapter, images, batch_size=2)
    assert hidden.shape == (3, 4, 4, 32)
    runner = BlockRunner(adapter, config, CheckpointReader(sam_assets["dense"]), "cpu", torch.float32, 4, batch_size=2)
    for index in range(runner.num_blocks):
        hidden = runner.forward(runner.load(index), hidden, index)
    with torch.no_grad():
        enc = model.image_encoder
        x = enc.patch_embed(images) + enc.pos_embed
        for block in enc.blocks:
            x = block(x)
    torch.testing.assert_close(hidden, x, rtol=1e-5, atol=1e-5)
    assert [b.window_size for b in enc.blocks] == [2, 2, 0]


# ---- pruning through the engine ------------------------------------------------------------


@pytest.mark.parametrize("method,pattern,sparsity,wbits", [
    ("magnitude", "unstructured", 0.5, 16), ("wanda", "unstructured", 0.7, 16),
    ("sparsegpt", "2:4", None, 16), ("icp", "unstructured", 0.6, 16), ("icp", "2:4", None, 4), ("wanda", "4:8", None, 3),
])
def test_every_method_prunes_a_tiny_sam(sam_assets, tmp_path, method, pattern, sparsity, wbits):
    from icp.checkpoint import assemble
    from icp.experiments import make_spec
    from icp.runs import prune_group

    config = {"methods": {"sparsegpt": {"blocksize": 16}, "icp": {"alpha": 0.8, "beta": 0.8, "compensation": {"epochs": 1, "lr": 1e-3}}},
              "engine": {"track_error": True}}
    spec = make_spec(config, method, pattern, sparsity, wbits)
    model, _ = load_model(str(sam_assets["dense"]))
    from icp.activations import block0_inputs

    images = torch.randn(4, 3, 64, 64)
    carry_in = tmp_path / "calib.pt"
    torch.save({"block0_inputs": block0_inputs(model, adapter_for("sam_vit"), images)}, carry_in)
    out = tmp_path / "steps"
    prune_group(sam_assets["dense"], spec, range(0, 3), carry_in, out / "blocks", out / "r.json", out / "c.pt",
                batch_size=2, log=lambda m: None)
    records = json.loads((out / "r.json").read_text())
    assert len(records) == 3 and all("output_rel_mse" in r for r in records)
    if method == "icp":
        assert all("compensation" in r for r in records[:-1])
        if pattern == "unstructured":  # beta: the fused qkv is pruned less than mlp.lin2
            layers = records[0]["layers"]
            assert layers["attn.qkv"]["sparsity"] < layers["mlp.lin2"]["sparsity"]
    assemble(sam_assets["dense"], [out / "blocks"], tmp_path / "model", {"spec": spec.to_dict()})
    checks = verify_pruned(tmp_path / "model", spec.to_dict())
    assert checks["layers"] == 12
    pruned, _ = load_model(str(tmp_path / "model"))
    weights = [b.mlp.lin1.weight for b in pruned.image_encoder.blocks]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    expected = 0.5 if pattern != "unstructured" else sparsity
    # Wanda keeps a whole number per output row (32 inputs): within 1/32 of the target
    assert zeros == pytest.approx(expected, abs=0.12 if method == "icp" else 1 / 32)
    # the untouched parts of SAM stay dense and bit-identical
    dense, _ = load_model(str(sam_assets["dense"]))
    for part in ("image_encoder.neck", "prompt_encoder", "mask_decoder", "image_encoder.patch_embed"):
        a, b = pruned.get_submodule(part).state_dict(), dense.get_submodule(part).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_single_point_iou_on_synthetic_sets(sam_assets):
    model, _ = load_model(str(sam_assets["dense"]))
    for name in ("coco", "sa1b"):
        images = sam_iou.annotated_images({**sam_assets["sets"][name], "max_images": 3, "max_instances": 2})
        result = sam_iou.single_point_iou(model, images)
        assert result["instances"] == 6 and result["images"] == 3
        assert 0.0 <= result["value"] <= 1.0
    # the oracle choice can only be better than trusting the model's own scores
    images = sam_iou.annotated_images(sam_assets["sets"]["sa1b"])
    best = sam_iou.single_point_iou(model, images, selection="best_score")["value"]
    oracle = sam_iou.single_point_iou(model, images, selection="oracle")["value"]
    assert oracle >= best


def test_calibration_images_follow_sams_transform(sam_assets):
    from icp.data.images import calibration_images, image_paths, sam_input

    cfg = sam_assets["sets"]["calib"]
    batch = calibration_images(cfg, 3, seed=0, image_size=64)
    assert batch.shape == (3, 3, 64, 64)
    assert torch.equal(batch, calibration_images(cfg, 3, seed=0, image_size=64))
    # a 48 x 40 image: resized to 64 x 53, normalised, zero padding on the right
    x = sam_input(np.full((48, 40, 3), 255, np.uint8), 64)
    assert x.shape == (3, 64, 64)
    assert torch.all(x[:, :, 54:] == 0) and torch.all(x[:, :, :53] > 0)
    assert len(image_paths(sam_assets["sets"]["coco"])) == 4
    with pytest.raises(ValueError, match="only 4"):
        calibration_images(cfg, 5, seed=0, image_size=64)

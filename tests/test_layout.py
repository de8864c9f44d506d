"""Run identity, file layout and the stage seam, without running anything (seconds)."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from icp import experiments as X
from icp import layout as L
from icp.registry import LAYER_PRUNERS, METHODS, method_label, split_method

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def config():
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def test_identity_and_layout_import_no_torch():
    code = "import sys, icp.layout, icp.experiments, icp.registry, icp.spec; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


def test_registry_matches_the_pruner_classes():
    from icp.methods import PRUNERS

    assert set(LAYER_PRUNERS) == set(PRUNERS)
    assert set(METHODS) == {*PRUNERS, "icp"}
    assert method_label("sparsegpt+ic") == "SparseGPT + IC" and method_label("dense") == "Dense"
    with pytest.raises(ValueError, match="unknown post-pruning stage 'xx'"):
        split_method("wanda+xx")


def test_a_stage_names_its_own_run_and_never_renames_the_pruning_run(config):
    plain = X.experiment(config, "smollm2-135m", "sparsegpt", "unstructured", 0.7, 16)
    staged = X.experiment(config, "smollm2-135m", "sparsegpt+ic", "unstructured", 0.7, 16)
    assert staged.pruning_run == plain.run and staged.stages[0].input_run == plain.run
    assert re.fullmatch(re.escape(plain.run) + r"\+ic-[0-9a-f]{8}", staged.run)
    assert re.fullmatch(L.RUN_WITH_STAGES, staged.run) and re.fullmatch(L.RUN_NAME, plain.run)
    assert staged.method == "sparsegpt+ic" and staged.identity()["stages"] == ["ic"]
    changed = copy.deepcopy(config)
    changed["stages"]["ic"]["epochs"] = 3
    again = X.experiment(changed, "smollm2-135m", "sparsegpt+ic", "unstructured", 0.7, 16)
    assert again.pruning_run == plain.run and again.run != staged.run  # the stage re-runs, the pruning does not
    # a how-not-what setting leaves the name alone
    neutral = copy.deepcopy(config)
    neutral["stages"]["ic"]["checkpoint_blocks"] = False
    assert X.experiment(neutral, "smollm2-135m", "sparsegpt+ic", "unstructured", 0.7, 16).run == staged.run


def test_every_path_comes_from_a_layout_template(config):
    staged = X.experiment(config, "smollm2-135m", "icp+ic", "unstructured", 0.7, 16)
    assert L.model_dir("m", "dense") == "results/m/dense"
    assert L.path("run_weights", model="m", run=staged.run).endswith(f"runs/{staged.run}/model/model.safetensors")
    assert X.perplexity_path(config, "smollm2-135m", "r", "wiki-eval").startswith("results/smollm2-135m/evals/r/ppl-wiki-eval-")
    rules = "\n".join(p.read_text() for p in (ROOT / "workflow" / "rules").glob("*.smk"))
    rules += (ROOT / "Snakefile").read_text()
    code_lines = [line for line in rules.splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in code_lines if '"results/' in line or "f\"results/" in line]


def test_bad_stage_settings_stop_at_the_dry_run(config):
    bad = copy.deepcopy(config)
    bad["tables"]["table1"]["methods"].append("sparsegpt+ic")
    bad["stages"] = {"ic": {"rank": 0}}
    with pytest.raises(ValueError, match=r"stages.ic \(model 'smollm2-135m'\): input compensation 'rank' must be at least 1"):
        X.check_config(bad)
    sam = copy.deepcopy(config)  # SAM runs take IC too (on the patch embeddings), with checked settings
    sam["tables"]["table3"]["methods"] = ["wanda+ic"]
    sam["models"]["shapes-sam"]["stages"] = {"ic": {"accumulation": 0}}
    with pytest.raises(ValueError, match=r"stages.ic \(model 'shapes-sam'\): input compensation needs epochs >= 0"):
        X.check_config(sam)
    del sam["models"]["shapes-sam"]["stages"]
    X.check_config(sam)
    assert any("+ic-" in e.run for e in X.table_experiments(sam, "table3"))
    unknown = copy.deepcopy(config)
    unknown["tables"]["table1"]["methods"] = ["wanda+foo"]
    with pytest.raises(ValueError, match="unknown post-pruning stage 'foo'"):
        X.check_config(unknown)


def test_ic_tables_plan_plain_and_compensated_runs(config):
    cfg = copy.deepcopy(config)
    cfg["tables"]["ic_perplexity"] = {"models": ["smollm2-135m"], "methods": ["wanda", "wanda+ic"],
                                      "sparsities": [0.7], "corpora": ["wiki-eval"]}
    X.check_config(cfg)
    runs = {e.run for e in X.table_experiments(cfg, "ic_perplexity")}
    plain = X.experiment(cfg, "smollm2-135m", "wanda", "unstructured", 0.7, 16).run
    assert plain in runs and any(r.startswith(plain + "+ic-") for r in runs) and "dense" in runs
    targets = X.evaluation_targets(cfg)
    assert any("+ic-" in t and "/ppl-wiki-eval-" in t for t in targets)
    assert any(r.endswith("pruning.json") and "+ic-" in r for r in X.run_records(cfg))


def test_the_api_and_the_workflow_write_one_pruning_record_schema(tmp_path):
    import json

    import icp
    from icp.data.tokens import calibration_windows
    from icp.models.loading import load_model
    from icp.records import pruning_record
    from tiny import generated_text, write_tiny_model

    model, tok = load_model(str(write_tiny_model(tmp_path / "m", "llama", blocks=2, hidden=32)))
    calib = calibration_windows(tok, [generated_text(2000)], 4, 16, 0)
    icp.prune(model, calib, method="wanda", sparsity=0.5, device="cpu", save_to=tmp_path / "out")
    record = json.loads((tmp_path / "out" / "pruning.json").read_text())
    assert set(record) == set(pruning_record({}, [])) | {"quant_grids"}
    assert record["measured_sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert [block["block"] for block in record["blocks"]] == [0, 1]


def test_a_models_zeroshot_batch_size_is_its_own_and_not_in_the_key():
    from icp import experiments as X

    config = {"zeroshot": {"batch_size": 64, "tasks": {"t": {}}},
              "models": {"small": {"source": "a"}, "gemma": {"source": "b", "zeroshot_batch_size": 8}}}
    assert X.zeroshot_settings(config, "small")["batch_size"] == 64
    assert X.zeroshot_settings(config, "gemma") == {"batch_size": 8, "tasks": {"t": {}}}
    assert X.zeroshot_path(config, "gemma", "dense") == X.zeroshot_path(config, "gemma", "dense")
    assert X.zeroshot_key(config) == X.zeroshot_key({**config, "models": {"small": {"source": "a"}}})
    assert X.model_entry(config, "gemma") == {"source": "b"}  # nothing re-runs when it changes

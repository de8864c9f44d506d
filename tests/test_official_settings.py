"""The official ICP scripts' settings: the compensation options that express their loop, per-model
method settings, and config/paper.yaml carrying them (CPU only)."""

import copy
import math
from pathlib import Path

import pytest
import torch
import yaml

from icp import experiments as X
from icp.engine import BlockRunner
from icp.methods.compensation import Compensation, compensate
from icp.models import adapter_for
from icp.models.loading import CheckpointReader, load_config

REPO = Path(__file__).resolve().parents[1]


def lm_config():
    return {
        "models": {"a": {"source": "some/a"}, "b": {"source": "some/b"}},
        "corpora": {"c": {"source": "wikitext2"}},
        "calibration": {"corpus": "c", "nsamples": 4, "seqlen": 32, "seed": 0},
        "engine": {"blocks_per_step": "all"},
        "methods": {"sparsegpt": {"blocksize": 16},
                    "icp": {"alpha": 0.8, "beta": 0.9, "compensation": {"epochs": 1, "lr": 3e-4, "seed": 0}}},
        "perplexity": {"seqlen": 32}, "zeroshot": {"tasks": {}},
        "tables": {"table1": {"models": ["a", "b"], "methods": ["sparsegpt", "icp"], "sparsities": [0.5], "corpora": ["c"]}},
    }


def runs(config):
    return {key: exp for key, exp in X.all_experiments(config).items() if exp.spec is not None}


@pytest.mark.parametrize("bad,message", [
    ({"autocast": "fp8"}, "'autocast' must be one of"),
    ({"optimizer": "sgd"}, "'optimizer' must be one of"),
    ({"schedule": "cosine"}, "'schedule' must be one of"),
    ({"gamma": 0.9}, "needs schedule: exponential"),
    ({"schedule": "exponential", "gamma": 0.0}, "'gamma' must be in (0, 1]"),
    ({"lr": float("nan")}, "'lr' must be a finite number"),
    ({"lr": float("inf")}, "'lr' must be a finite number"),
    ({"epochs": 1.5}, "'epochs' must be a whole number"),
    ({"dropout": "yes"}, "'dropout' must be true or false"),
])
def test_bad_compensation_settings_are_named(bad, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Compensation(**bad)


def test_settings_left_at_their_defaults_keep_a_runs_hash():
    """The new options enter a run's identity only when set to something else: configs written
    before them keep their run names (and their results on disk)."""
    config = lm_config()
    before = runs(config)
    explicit = copy.deepcopy(config)
    explicit["methods"]["icp"]["compensation"].update(autocast="bf16", optimizer="adamw", schedule="none",
                                                      gamma=1.0, dropout=False)
    assert runs(explicit).keys() == before.keys()
    for change in ({"autocast": "fp16"}, {"optimizer": "adam"}, {"schedule": "exponential", "gamma": 0.87},
                   {"dropout": True}):
        changed = copy.deepcopy(config)
        changed["methods"]["icp"]["compensation"].update(change)
        new = set(runs(changed)) - set(before)
        assert len(new) == 2 and all(run.startswith("icp-") for _, run in new), change


def test_model_settings_merge_over_the_methods_and_change_only_that_models_runs():
    config = lm_config()
    before = runs(config)
    config["models"]["b"]["methods"] = {"icp": {"alpha": 0.691, "compensation": {"lr": 1e-4, "schedule": "exponential",
                                                                                  "gamma": 0.87}}}
    after = runs(config)
    assert {k for k in after if k not in before} == {k for k in after if k[0] == "b" and k[1].startswith("icp-")}
    spec = next(exp.spec for (model, run), exp in after.items() if model == "b" and run.startswith("icp-"))
    assert spec.alpha == 0.691 and spec.beta == 0.9  # beta from the top level
    assert spec.compensation == {"epochs": 1, "lr": 1e-4, "seed": 0, "schedule": "exponential", "gamma": 0.87}
    assert X.method_settings(config, "icp", "a")["compensation"]["lr"] == 3e-4


def test_a_methods_calibration_seed_gets_its_own_calibration_data():
    config = lm_config()
    config["models"]["b"]["methods"] = {"icp": {"calibration": {"seed": 120}}}
    exps = runs(config)
    icp_b = next(exp for (m, r), exp in exps.items() if m == "b" and r.startswith("icp-"))
    sgpt_b = next(exp for (m, r), exp in exps.items() if m == "b" and r.startswith("sparsegpt-"))
    icp_a = next(exp for (m, r), exp in exps.items() if m == "a" and r.startswith("icp-"))
    assert icp_b.calibration != sgpt_b.calibration == X.calibration_key(config, "b")
    assert icp_a.calibration == X.calibration_key(config, "a")
    assert X.calibration_settings(config, "b", icp_b.calibration)["seed"] == 120
    assert X.calibration_settings(config, "b", sgpt_b.calibration)["seed"] == 0
    assert "calibration" not in icp_b.spec.method_options  # not a pruner option


def test_an_ablation_sweeps_a_setting_the_model_overrides():
    config = lm_config()
    config["models"]["a"]["methods"] = {"icp": {"compensation": {"lr": 1e-4}}}
    config["ablations"] = {"model": "a", "sparsities": [0.5], "sweeps": {"lr": {"values": [1e-4, 1e-3]}}}
    points = X.ablation_points(config)
    assert [p.experiment.spec.compensation["lr"] for p in points] == [1e-4, 1e-3]
    assert [p.table_setting for p in points] == [True, False]


def test_paper_config_carries_the_official_scripts_settings():
    config = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    X.check_config(config)
    by_model = {}
    for (model, run), exp in runs(config).items():
        if exp.spec.method == "icp" and exp.spec.pattern == "unstructured":
            by_model[model] = exp
    opt, llama, sam = by_model["opt-6.7b"].spec, by_model["llama-2-7b"].spec, by_model["sam-b"].spec
    assert (opt.alpha, opt.beta) == (0.691, 0.8)
    assert Compensation(**opt.compensation) == Compensation(epochs=12, lr=1e-4, schedule="exponential", gamma=0.87,
                                                            autocast="fp16", optimizer="adam", dropout=True)
    assert (llama.alpha, llama.beta) == (1.0, 1.0)
    assert Compensation(**llama.compensation) == Compensation(epochs=1, lr=5e-4, autocast="fp16", optimizer="adam")
    assert (sam.alpha, sam.beta) == (0.85, 1.0)
    assert Compensation(**sam.compensation) == Compensation(epochs=8, lr=5e-4, schedule="exponential", gamma=0.9,
                                                            autocast="fp16", optimizer="adam")
    seeds = {m: X.calibration_settings(config, m, by_model[m].calibration) for m in ("opt-6.7b", "llama-2-7b", "sam-b")}
    assert seeds["opt-6.7b"]["seed"] == 0 and seeds["llama-2-7b"]["seed"] == 120
    assert (seeds["sam-b"]["seed"], seeds["sam-b"]["nsamples"]) == (120, 128)
    # the baselines keep the tables' calibration and settings
    for (model, run), exp in runs(config).items():
        if exp.spec.method != "icp":
            assert exp.calibration == X.calibration_key(config, model)


def test_paper_config_plans_the_same_runs_as_without_the_official_settings():
    """Only ICP runs change when the per-model settings are taken away."""
    config = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    plain = copy.deepcopy(config)
    for model in plain["models"].values():
        model.pop("methods", None)
    with_, without = runs(config), runs(plain)
    assert len(with_) == len(without)
    assert {k for k in with_ if not k[1].startswith("icp-")} == {k for k in without if not k[1].startswith("icp-")}


@pytest.fixture
def opt_block(tiny_dirs):
    config = load_config(tiny_dirs["opt"])
    adapter = adapter_for(config.model_type)
    runner = BlockRunner(adapter, config, CheckpointReader(tiny_dirs["opt"]), "cpu", torch.float32, 16)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 16, config.hidden_size, generator=g)
    target = runner.forward(runner.load(1), x, 1)
    noisy = x + 0.3 * torch.randn(x.shape, generator=g)
    return runner, adapter, noisy, target


def trained(runner, adapter, noisy, target, **settings):
    block = runner.load(1)
    record = compensate(block, adapter, runner.kwargs(1), noisy, target, Compensation(**settings), seed_offset=1)
    return block, record


def test_exponential_schedule_steps_once_per_epoch(opt_block):
    runner, adapter, noisy, target = opt_block
    _, record = trained(runner, adapter, noisy, target, epochs=3, lr=1e-3, schedule="exponential", gamma=0.5)
    assert record["epoch_lr"] == pytest.approx([1e-3, 5e-4, 2.5e-4])
    flat, record = trained(runner, adapter, noisy, target, epochs=3, lr=1e-3)
    assert "epoch_lr" not in record


def test_adam_and_adamw_agree_without_weight_decay_and_differ_with_it(opt_block):
    runner, adapter, noisy, target = opt_block
    a, _ = trained(runner, adapter, noisy, target, epochs=2, lr=1e-3, optimizer="adam")
    b, _ = trained(runner, adapter, noisy, target, epochs=2, lr=1e-3, optimizer="adamw")
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q)
    c, _ = trained(runner, adapter, noisy, target, epochs=2, lr=1e-3, optimizer="adam", weight_decay=0.1)
    d, _ = trained(runner, adapter, noisy, target, epochs=2, lr=1e-3, optimizer="adamw", weight_decay=0.1)
    assert any(not torch.equal(p, q) for p, q in zip(c.parameters(), d.parameters()))


def test_dropout_training_is_seeded_and_leaves_the_global_generator_alone(opt_block):
    runner, adapter, noisy, target = opt_block
    assert runner.config.dropout > 0
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, record = trained(runner, adapter, noisy, target, epochs=2, lr=1e-3, dropout=True)
    assert torch.equal(torch.get_rng_state(), state)
    b, _ = trained(runner, adapter, noisy, target, epochs=2, lr=1e-3, dropout=True)
    c, _ = trained(runner, adapter, noisy, target, epochs=2, lr=1e-3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))
    assert not a.training and math.isfinite(record["epoch_loss"][-1])

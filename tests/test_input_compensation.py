"""Input compensation: the pool, its training, folding it into the embeddings, the stage job."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from icp.data.tokens import calibration_windows, evaluation_windows, tokenize_stream
from icp.evaluate.perplexity import perplexity
from icp.methods.input_compensation import (InputPool, dense_targets, fold_into_embeddings, pool_applied,
                                            train_input_compensation)
from icp.models import adapter_for
from icp.models.loading import load_model
from icp.spec import InputCompensationSettings, stage_settings
from tiny import generated_text, write_tiny_model


@pytest.fixture(scope="module")
def pruned_and_dense(tmp_path_factory):
    """A tiny Llama (tied embeddings, as SmolLM2) magnitude-pruned at 70 %, and its dense twin."""
    import icp

    root = tmp_path_factory.mktemp("ic")
    source = write_tiny_model(root / "dense", "llama", blocks=2, hidden=32)
    dense, tok = load_model(str(source))
    pruned, _ = load_model(str(source))
    text = generated_text(3000)
    calib = calibration_windows(tok, [text], 8, 24, 0)
    icp.prune(pruned, calib, method="magnitude", sparsity=0.7, device="cpu")
    evals = evaluation_windows(tokenize_stream(tok, [generated_text(2000, seed=1)]), 24, 6)
    return root, source, dense, pruned, tok, calib, evals


def test_folded_embeddings_give_the_logits_of_the_pool_applied_at_run_time(pruned_and_dense):
    _, _, _, pruned, _, calib, _ = pruned_and_dense
    model = type(pruned)(copy.deepcopy(pruned.config))  # the fold unties the config: not the fixture's
    model.load_state_dict(pruned.state_dict())
    model.eval()
    adapter = adapter_for("llama")
    pool = InputPool(32, 4, init_std=0.5, seed=3)  # a large pool: the correction is far from zero
    head_before = model.get_output_embeddings().weight.detach().clone()
    with torch.no_grad(), pool_applied(adapter.input_embeddings(model), pool):
        expected = model(calib).logits
    assert model.config.tie_word_embeddings
    fold_into_embeddings(model, adapter, pool)
    with torch.no_grad():
        got = model(calib).logits
    assert not model.config.tie_word_embeddings  # untied: the head keeps the original table
    assert torch.equal(model.get_output_embeddings().weight, head_before)
    assert not torch.equal(model.get_input_embeddings().weight, head_before)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_training_lowers_the_hidden_state_error_and_resumes_bit_identically(pruned_and_dense, tmp_path):
    _, _, dense, pruned, _, calib, _ = pruned_and_dense
    adapter = adapter_for("llama")
    targets = dense_targets(dense, adapter, calib)
    # the tiny model's embeddings are small (std 0.02): a pool of the paper's N(0, 0.01^2) would
    # start far from the identity, so the test starts it closer
    settings = InputCompensationSettings(rank=8, epochs=4, lr=1e-3, warmup=0.2, init_std=1e-3)
    with torch.no_grad():
        before = float((adapter.final_features(pruned, calib) - targets).pow(2).mean())
    pool, record = train_input_compensation(pruned, adapter, calib, targets, settings, log=lambda s: None)
    with torch.no_grad(), pool_applied(adapter.input_embeddings(pruned), pool):
        after = float((adapter.final_features(pruned, calib) - targets).pow(2).mean())
    assert len(record["epoch_loss"]) == 4 and record["steps_per_epoch"] == 4 and record["warmup_steps"] == 3
    assert after < 0.95 * before
    assert all(not p.requires_grad for p in pruned.parameters())  # the pruned weights stay frozen

    # killed after epoch 2: the rerun reads the progress file and ends where the whole run ended
    progress = tmp_path / "progress"

    def killed_after_epoch_2(line: str) -> None:
        if "epoch 2/4" in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_input_compensation(pruned, adapter, calib, targets, settings, progress=progress, log=killed_after_epoch_2)
    assert torch.load(progress, weights_only=False)["epoch"] == 2
    lines = []
    resumed, record2 = train_input_compensation(pruned, adapter, calib, targets, settings, progress=progress,
                                                log=lines.append)
    assert any("resuming input compensation after epoch 2/4" in line for line in lines)
    assert torch.equal(resumed.key, pool.key) and torch.equal(resumed.value, pool.value)
    assert record2["epoch_loss"] == record["epoch_loss"]


def test_one_batch_of_two_steps_as_two_accumulated_batches_of_one(pruned_and_dense):
    """batch_size 2 without accumulation takes the same optimizer steps as the paper's batch 1 with
    accumulation 2 (the same samples per step, the mean of their losses), in half the forwards: the
    README's launch-bound small-model advice rests on it. Equal up to rounding, not bit for bit."""
    _, _, dense, pruned, _, calib, _ = pruned_and_dense
    adapter = adapter_for("llama")
    targets = dense_targets(dense, adapter, calib)
    common = dict(rank=8, epochs=2, lr=1e-3, warmup=0.2, init_std=1e-3)
    paper = InputCompensationSettings(batch_size=1, accumulation=2, **common)
    fused = InputCompensationSettings(batch_size=2, accumulation=1, **common)
    pool_a, record_a = train_input_compensation(pruned, adapter, calib, targets, paper, log=lambda s: None)
    pool_b, record_b = train_input_compensation(pruned, adapter, calib, targets, fused, log=lambda s: None)
    assert record_a["steps_per_epoch"] == record_b["steps_per_epoch"] == 4
    assert not torch.equal(pool_a.key, InputPool(32, 8, 1e-3, paper.seed).key)  # it trained
    torch.testing.assert_close(pool_b.key, pool_a.key, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(pool_b.value, pool_a.value, rtol=1e-4, atol=1e-6)
    assert record_b["epoch_loss"] == pytest.approx(record_a["epoch_loss"], rel=1e-5)


def test_the_stage_job_writes_a_checkpoint_that_reloads_with_the_same_perplexity(pruned_and_dense, tmp_path):
    from icp.stages import run_input_compensation

    root, source, dense, pruned, tok, calib, evals = pruned_and_dense
    run_dir = tmp_path / "run"
    pruned.save_pretrained(run_dir)
    tok.save_pretrained(run_dir)
    (run_dir / "pruning.json").write_text(json.dumps({"spec": {"method": "magnitude"}, "blocks": []}))
    targets = tmp_path / "outputs.pt"
    torch.save({"tokens": calib, "last_hidden": dense_targets(dense, adapter_for("llama"), calib)}, targets)
    stage = {"name": "ic", "settings": {"rank": 8, "epochs": 3, "lr": 1e-3, "init_std": 1e-3}, "calibration": "abc", "input_run": "run"}
    out = tmp_path / "run+ic"
    entry = run_input_compensation(run_dir, targets, stage, {"run": "run+ic-0123abcd"}, out, tmp_path / "progress",
                                   log=lambda s: None)
    record = json.loads((out / "pruning.json").read_text())
    assert record["id"]["run"] == "run+ic-0123abcd" and record["stages"][0]["name"] == "ic"
    assert record["stages"][0]["settings"]["rank"] == 8 and len(entry["epoch_loss"]) == 3
    assert not (tmp_path / "progress").exists()
    reloaded, reloaded_tok = load_model(str(out))
    assert reloaded_tok is not None and not reloaded.config.tie_word_embeddings
    # the pruned linears are untouched, the embedding table changed
    for name, value in pruned.state_dict().items():
        if "layers" in name:
            assert torch.equal(reloaded.state_dict()[name], value), name
    assert not torch.equal(reloaded.get_input_embeddings().weight, pruned.get_input_embeddings().weight)
    # same perplexity as the pool applied at run time to the pruned model
    from safetensors.torch import load_file

    pool_state = load_file(str(out / "ic_pool.safetensors"))
    pool = InputPool(32, 8)
    pool.load_state_dict(pool_state)
    with pool_applied(adapter_for("llama").input_embeddings(pruned), pool):
        live = perplexity(pruned, evals, batch_size=3)
    assert perplexity(reloaded, evals, batch_size=3) == pytest.approx(live, rel=1e-5)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="'rank' must be at least 1"):
        stage_settings("ic", {"rank": 0})
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['ranks'\]"):
        stage_settings("ic", {"ranks": 4})
    with pytest.raises(ValueError, match="'epochs' must be a whole number"):
        stage_settings("ic", {"epochs": 1.5})


def test_the_api_compensates_a_pruned_model_in_place(pruned_and_dense):
    import icp

    _, _, dense, pruned, _, calib, evals = pruned_and_dense
    model = type(pruned)(copy.deepcopy(pruned.config))
    model.load_state_dict(pruned.state_dict())
    model.eval()
    before = model.get_input_embeddings().weight.detach().clone()
    record = icp.input_compensation(model, dense, calib, device="cpu",
                                    settings={"rank": 4, "epochs": 2, "lr": 1e-3, "init_std": 1e-3})
    assert len(record["epoch_loss"]) == 2 and record["pool"].key.shape == (32, 4)
    assert not torch.equal(model.get_input_embeddings().weight, before)  # folded
    with pytest.raises(ValueError, match="settings: input compensation 'rank' must be at least 1"):
        icp.input_compensation(model, dense, calib, device="cpu", settings={"rank": 0})
    with pytest.raises(ValueError, match="do not match the calibration inputs"):
        icp.input_compensation(model, torch.zeros(2, 3, 32), calib, device="cpu")


# ---- SAM: our adaptation (the pool on the patch embeddings, matched on the image embedding) ----

@pytest.fixture(scope="module")
def tiny_sams(tmp_path_factory):
    """A tiny random SAM exported as a dense directory, a Wanda-pruned (70 %) twin saved as a run,
    and calibration images."""
    import icp
    from icp.models.sam import export_sam
    from tiny_sam import TINY_SAM_ARCH, write_tiny_sam

    root = tmp_path_factory.mktemp("ic_sam")
    export_sam(write_tiny_sam(root / "sam_vit_b_tiny.pth"), root / "dense", arch=TINY_SAM_ARCH)
    dense, _ = load_model(str(root / "dense"))
    pruned, _ = load_model(str(root / "dense"))
    images = torch.randn(6, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    icp.prune(pruned, images, method="wanda", sparsity=0.7, device="cpu", save_to=root / "run")
    return root, dense, pruned, images


def test_sam_ic_trains_on_the_patch_embeddings_and_reloads_with_its_pool(tiny_sams, tmp_path):
    from icp.stages import run_input_compensation

    root, dense, pruned, images = tiny_sams
    adapter = adapter_for("sam_vit")
    targets = dense_targets(dense, adapter, images, batch_size=4)
    assert targets.shape == (6, 32, 4, 4)  # the neck's image embedding
    torch.save({"tokens": images, "last_hidden": targets}, tmp_path / "outputs.pt")
    stage = {"name": "ic", "settings": {"rank": 4, "epochs": 6, "lr": 1e-2, "warmup": 0.0, "init_std": 1e-3},
             "calibration": "abc", "input_run": "run"}
    out = tmp_path / "run+ic"
    entry = run_input_compensation(root / "run", tmp_path / "outputs.pt", stage, {"run": "run+ic-0123abcd"}, out,
                                   tmp_path / "progress", log=lambda s: None)
    assert entry["folded"] is False and entry["epoch_loss"][-1] < entry["epoch_loss"][0]
    # the weights are the pruned run's, bit for bit; the pool sits beside them
    from safetensors.torch import load_file

    assert load_file(str(out / "model.safetensors")).keys() == load_file(str(root / "run" / "model.safetensors")).keys()
    for name, value in load_file(str(out / "model.safetensors")).items():
        assert torch.equal(value, load_file(str(root / "run" / "model.safetensors"))[name]), name
    reloaded, _ = load_model(str(out))
    pool = InputPool.from_file(out / "ic_pool.safetensors")
    with torch.no_grad():
        plain = adapter.final_features(pruned, images)
        with pool_applied(adapter.input_embeddings(pruned), pool):
            live = adapter.final_features(pruned, images)
        got = adapter.final_features(reloaded, images)
    torch.testing.assert_close(got, live, rtol=0, atol=0)  # the loader attaches the same pool
    error = lambda x: float((x - targets).pow(2).mean())  # noqa: E731
    assert error(got) < error(plain)  # and it brings the pruned encoder closer to the dense one
    assert not torch.equal(got, plain)


def test_the_api_compensates_a_pruned_sam_in_place(tiny_sams):
    import icp
    from icp.models.sam import load_sam

    root, dense, _, images = tiny_sams
    model = load_sam(root / "run")
    record = icp.input_compensation(model, dense, images, device="cpu",
                                    settings={"rank": 4, "epochs": 2, "lr": 1e-2, "init_std": 1e-3})
    assert len(record["epoch_loss"]) == 2
    assert torch.equal(model.image_encoder.patch_embed.input_pool.key, record["pool"].key)  # attached, not folded
    with pytest.raises(ValueError, match="do not match the calibration inputs"):
        icp.input_compensation(model, torch.zeros(2, 32, 4, 4), images, device="cpu")

"""The decoder families people prune today, each on a tiny random model built from its own
`transformers` config class (nothing downloaded): the block walk equals the model's forward, every
method prunes it to its target, a saved pruned model reloads with the same logits."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

import icp
from icp.activations import block0_inputs
from icp.models import ADAPTERS, adapter_for
from tiny import SEQLEN, generated_text, tiny_family_config, write_tokenizer

FAMILIES = ["mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return write_tokenizer(tmp_path_factory.mktemp("tok"))


def build(family: str, tokenizer, seed: int = 0):
    torch.manual_seed(seed)
    config = tiny_family_config(family, len(tokenizer))
    wanted = getattr(adapter_for(family), "attn_implementation", "sdpa")
    model = AutoModelForCausalLM.from_config(config, attn_implementation=wanted).eval()
    assert model.config.model_type == family
    return model


def windows(tokenizer, n: int, seed: int = 0) -> torch.Tensor:
    from icp.data.tokens import calibration_windows

    return calibration_windows(tokenizer, [generated_text(2000, seed=seed)], n, SEQLEN, seed)


def test_every_family_has_an_adapter():
    assert set(FAMILIES) <= set(ADAPTERS)


@pytest.mark.parametrize("family", [*FAMILIES, "llama"])
def test_block_walk_equals_the_models_forward(family, tokenizer):
    """Block by block, with the adapter's own arguments per block (a sliding-window mask on the
    sliding layers, the layer type's rotary table), on sequences longer than the window."""
    model = build(family, tokenizer)
    adapter = adapter_for(family)
    ids = windows(tokenizer, 2)
    hidden = block0_inputs(model, adapter, ids)
    kinds = set()
    for index, block in enumerate(adapter.blocks(model)):
        kwargs = adapter.block_kwargs(model.config, index, SEQLEN, torch.device("cpu"), torch.float32)
        kinds.add(adapter.block_kind(model.config, index))
        with torch.no_grad():
            hidden = adapter.run_block(block, hidden, kwargs)
    with torch.no_grad():
        expected = model(ids, use_cache=False).logits
        got = adapter.logits(model, hidden)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    if family == "llama":
        return  # no window: the check below is for the sliding-window families
    assert "sliding_attention" in kinds
    # the window matters: a full causal mask on every block would give other logits
    full = block0_inputs(model, adapter, ids)
    for index, block in enumerate(adapter.blocks(model)):
        kwargs = adapter.block_kwargs(model.config, index, SEQLEN, torch.device("cpu"), torch.float32)
        kwargs["attention_mask"] = None
        with torch.no_grad():
            full = adapter.run_block(block, full, kwargs)
    assert not torch.allclose(adapter.logits(model, full).detach(), expected, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_method_hits_its_target_and_the_pruned_model_reloads(family, tokenizer, tmp_path):
    calib = windows(tokenizer, 4, seed=1)
    for method in ("magnitude", "wanda", "sparsegpt", "icp"):
        model = build(family, tokenizer)
        report = icp.prune(model, calib, method=method, sparsity=0.5, device="cpu", alpha=1.0, beta=1.0,
                           compensation={"epochs": 1, "lr": 1e-4}, save_to=tmp_path / method)
        assert report.sparsity == pytest.approx(0.5, abs=2e-3), method
        adapter = adapter_for(family)
        zeros = total = 0
        for block in adapter.blocks(model):
            for linear in adapter.prunable_linears(block).values():
                zeros += int((linear.weight == 0).sum())
                total += linear.weight.numel()
        assert zeros / total == pytest.approx(0.5, abs=2e-3), method
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "icp", attn_implementation=model.config._attn_implementation)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(calib, use_cache=False).logits, model(calib, use_cache=False).logits)


@pytest.mark.parametrize("family", ["qwen2", "gemma3_text"])
def test_input_compensation_folds_on_scaled_and_plain_embeddings(family, tokenizer):
    """Gemma scales its embeddings by sqrt(d) inside the embedding module; the fold accounts for it."""
    from icp.methods.input_compensation import InputPool, fold_into_embeddings, pool_applied

    model = build(family, tokenizer)
    adapter = adapter_for(family)
    ids = windows(tokenizer, 2)
    pool = InputPool(32, 4, init_std=0.3, seed=1)
    with torch.no_grad(), pool_applied(adapter.input_embeddings(model), pool):
        expected = model(ids, use_cache=False).logits
    fold_into_embeddings(model, adapter, pool)
    with torch.no_grad():
        torch.testing.assert_close(model(ids, use_cache=False).logits, expected, rtol=1e-4, atol=1e-4)

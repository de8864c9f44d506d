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


class _BatchRunner:
    """BlockRunner.forward's batching, without a checkpoint: what `statistics_pass` drives."""

    batch_size = 2

    def __init__(self, adapter, kwargs):
        self.adapter, self.kwargs = adapter, kwargs

    @torch.no_grad()
    def forward(self, block, hidden, index, keep_output=True):
        for start in range(0, hidden.shape[0], self.batch_size):
            self.adapter.run_block(block, hidden[start : start + self.batch_size], self.kwargs)


@pytest.mark.parametrize("family", [*FAMILIES, "llama"])
def test_statistics_pass_skips_the_last_product_and_keeps_the_statistics(family, tokenizer, monkeypatch):
    """The engine's statistics pass runs the block's last linear for the first batch only, yet every
    pruner's statistics (SparseGPT's Hessians, Wanda's norms) equal a plain pass's bit for bit."""
    from icp.engine import statistics_pass
    from icp.methods import make_pruners

    model = build(family, tokenizer)
    adapter = adapter_for(family)
    hidden = block0_inputs(model, adapter, windows(tokenizer, 6, seed=2))
    block = adapter.blocks(model)[0]
    runner = _BatchRunner(adapter, adapter.block_kwargs(model.config, 0, SEQLEN, torch.device("cpu"), torch.float32))
    linears = adapter.prunable_linears(block)
    stats = {}
    for way in ("plain", "pass"):
        pruners = {m: make_pruners(m, linears, {}, adapter.shared_inputs) for m in ("sparsegpt", "wanda")}
        both = {name: [pruners["sparsegpt"][name], pruners["wanda"][name]] for name in linears}
        if way == "plain":
            def feed(_m, args, _o, ps):
                for p in ps:
                    p.add_batch(args[0])

            hooks = [linear.register_forward_hook(lambda m, a, o, ps=both[name]: feed(m, a, o, ps))
                     for name, linear in linears.items()]
            runner.forward(block, hidden, 0)
            for h in hooks:
                h.remove()
        else:
            calls = {}
            real = torch.nn.functional.linear

            def counting(x, weight, bias=None):
                calls[weight.data_ptr()] = calls.get(weight.data_ptr(), 0) + 1
                return real(x, weight, bias)

            monkeypatch.setattr(torch.nn.functional, "linear", counting)

            class Fan:  # one pruner slot that feeds both methods
                def __init__(self, ps):
                    self.ps = ps

                def add_batch(self, x):
                    for p in self.ps:
                        p.add_batch(x)

            statistics_pass(runner, block, 0, hidden, linears, {name: Fan(ps) for name, ps in both.items()})
            monkeypatch.undo()
            counts = {name: calls.get(linear.weight.data_ptr(), 0) for name, linear in linears.items()}
            assert sorted(counts.values())[0] == 1 and sorted(counts.values())[1] == 3, counts  # one linear skipped twice
            assert all("forward" not in vars(linear) for linear in linears.values())  # restored
        stats[way] = {name: (ps[0].hessian.matrix.clone() if ps[0].feeds_hessian else None,
                             ps[1].norms.squared.clone() if ps[1].feeds_norms else None) for name, ps in both.items()}
    for name in linears:
        for plain, fast in zip(stats["plain"][name], stats["pass"][name]):
            assert (plain is None) == (fast is None)
            if plain is not None:
                assert torch.equal(plain, fast), name

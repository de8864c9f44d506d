"""The block walk on tiny random OPT and Llama models, CPU only."""

import json

import pytest
import torch
from safetensors.torch import load_file

from icp.activations import block0_inputs
from icp.checkpoint import assemble
from icp.data.tokens import calibration_windows, evaluation_windows, tokenize_stream
from icp.engine import BlockRunner
from icp.evaluate.perplexity import perplexity, perplexity_blockwise
from icp.methods.compensation import Compensation, compensate
from icp.models import adapter_for
from icp.models.loading import CheckpointReader, load_config, load_model
from icp.runs import RunSpec, prune_group


@pytest.fixture
def setup(tiny_dirs, family, text, tmp_path):
    model_dir = tiny_dirs[family]
    model, tok = load_model(str(model_dir))
    windows = calibration_windows(tok, [text], 8, 32, seed=0)
    x0 = block0_inputs(model, adapter_for(model.config.model_type), windows)
    torch.save({"block0_inputs": x0}, tmp_path / "x0.pt")
    evals = evaluation_windows(tokenize_stream(tok, [text]), 32, 12)
    return model_dir, model, tmp_path, evals


def run_all(model_dir, spec, tmp, groups=((0, 2), (2, 3)), name="run", log=lambda s: None):
    carry = tmp / "x0.pt"
    weights = []
    for g, (a, b) in enumerate(groups):
        out = tmp / name
        prune_group(model_dir, spec, range(a, b), carry, out / f"{g}.blocks", out / f"{g}.json", out / f"{g}.carry.pt", log=log)
        carry = out / f"{g}.carry.pt"
        weights.append(out / f"{g}.blocks")
    assemble(model_dir, weights, tmp / name / "model", {"spec": spec.to_dict()})
    return tmp / name / "model"


def test_blockwise_perplexity_equals_whole_model(setup):
    model_dir, model, tmp, evals = setup
    full = perplexity(model, evals)
    blockwise = perplexity_blockwise(model, adapter_for(model.config.model_type), evals, "cpu")
    assert blockwise == pytest.approx(full, rel=1e-4)


def test_block_runner_reproduces_the_model(setup):
    model_dir, model, tmp, evals = setup
    config = load_config(model_dir)
    adapter = adapter_for(config.model_type)
    runner = BlockRunner(adapter, config, CheckpointReader(model_dir), "cpu", torch.float32, evals.shape[1])
    hidden = block0_inputs(model, adapter, evals[:4])
    for i in range(runner.num_blocks):
        hidden = runner.forward(runner.load(i), hidden, i)
    with torch.no_grad():
        got = adapter.logits(model, hidden)
        expected = model(evals[:4]).logits
    assert torch.allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt", "icp"])
def test_pruned_model_saves_reloads_and_has_target_sparsity(setup, method):
    model_dir, model, tmp, evals = setup
    spec = RunSpec(method, sparsity=0.5, alpha=0.8 if method == "icp" else 1.0, beta=0.9 if method == "icp" else 1.0)
    out = run_all(model_dir, spec, tmp, name=method)
    pruned, _ = load_model(str(out))
    adapter = adapter_for(pruned.config.model_type)
    total = zeros = 0
    for block in adapter.blocks(pruned):
        for linear in adapter.prunable_linears(block).values():
            total += linear.weight.numel()
            zeros += int((linear.weight == 0).sum())
    assert zeros / total == pytest.approx(0.5, abs=0.01)
    ppl = perplexity(pruned, evals)
    reloaded, _ = load_model(str(out))
    assert perplexity(reloaded, evals) == ppl
    assert json.loads((out / "pruning.json").read_text())["spec"]["method"] == method


def test_icp_without_compensation_or_rearrangement_is_sequential_sparsegpt(setup):
    model_dir, model, tmp, evals = setup
    icp = run_all(model_dir, RunSpec("icp", sparsity=0.6, compensation={"epochs": 0}), tmp, name="icp0")
    sgpt = run_all(model_dir, RunSpec("sparsegpt", sparsity=0.6), tmp, name="sgpt")
    a, b = load_file(str(icp / "model.safetensors")), load_file(str(sgpt / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_compensation_lowers_block_output_error(setup):
    model_dir, model, tmp, evals = setup
    config = load_config(model_dir)
    adapter = adapter_for(config.model_type)
    runner = BlockRunner(adapter, config, CheckpointReader(model_dir), "cpu", torch.float32, 32)
    x = torch.load(tmp / "x0.pt")["block0_inputs"]
    target = runner.forward(runner.load(1), x, 1)
    noisy = x + 0.3 * x.std() * torch.randn_like(x)  # an "error stream"
    block = runner.load(1)
    before = float((runner.forward(block, noisy, 1) - target).pow(2).mean())
    compensate(block, adapter, runner.kwargs(1), noisy, target, Compensation(epochs=3, lr=1e-3))
    after = float((runner.forward(block, noisy, 1) - target).pow(2).mean())
    assert after < 0.9 * before


def test_compensation_of_a_half_precision_block_on_the_cpu(setup):
    """On the CPU the block trains in fp32: the fp16 masks (and Llama's rotary tables) follow it."""
    model_dir, model, tmp, evals = setup
    config = load_config(model_dir)
    adapter = adapter_for(config.model_type)
    runner = BlockRunner(adapter, config, CheckpointReader(model_dir), "cpu", torch.float16, 32)
    x = torch.load(tmp / "x0.pt")["block0_inputs"].half()
    target = runner.forward(runner.load(1), x, 1)
    block = runner.load(1)
    noisy = (x.float() + 0.3 * x.float().std() * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).half()
    before = float((runner.forward(block, noisy, 1) - target).float().pow(2).mean())
    result = compensate(block, adapter, runner.kwargs(1), noisy, target, Compensation(epochs=3, lr=1e-3))
    after = float((runner.forward(block, noisy, 1) - target).float().pow(2).mean())
    assert result["epochs"] == 3 and next(block.parameters()).dtype == torch.float16
    assert after < 0.9 * before


def test_resume_after_kill_is_bit_identical(setup, monkeypatch):
    model_dir, model, tmp, evals = setup
    spec = RunSpec("icp", sparsity=0.5, alpha=0.8, beta=0.9, compensation={"lr": 1e-3})
    whole = run_all(model_dir, spec, tmp, groups=((0, 3),), name="whole")

    import icp.runs as runs

    real_step = runs.run_step
    calls = {"n": 0}

    def dying_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(runs, "run_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        run_all(model_dir, spec, tmp, groups=((0, 3),), name="resumed")
    partial = tmp / "resumed" / "0.blocks.partial"
    assert sorted(p.name for p in partial.glob("block_*")) == [
        "block_0000.json", "block_0000.safetensors", "block_0001.json", "block_0001.safetensors"]
    assert not list(partial.glob("*.pt"))  # no stream snapshots: a resume replays the finished blocks
    monkeypatch.setattr(runs, "run_step", real_step)
    logged = []
    resumed = run_all(model_dir, spec, tmp, groups=((0, 3),), name="resumed", log=logged.append)
    assert any("resuming at block 2" in line for line in logged), logged
    assert calls["n"] == 3  # only block 2 was pruned again
    assert not partial.exists() and (tmp / "resumed" / "0.blocks").is_dir()
    assert torch.load(tmp / "resumed" / "0.carry.pt", weights_only=True) == {"final": True}
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    for name in a:
        assert torch.equal(a[name], b[name]), name
    rec_whole = json.loads((tmp / "whole" / "0.json").read_text())
    rec_res = json.loads((tmp / "resumed" / "0.json").read_text())
    assert [r["output_mse"] for r in rec_whole] == [r["output_mse"] for r in rec_res]


def test_unknown_family_is_named():
    with pytest.raises(ValueError, match="unsupported model family 'gpt2'"):
        adapter_for("gpt2")


def test_quantized_nm_checkpoint_passes_checks_and_tampering_fails(setup):
    from safetensors.torch import save_file

    from icp.checks import verify_pruned

    model_dir, model, tmp, evals = setup
    spec = RunSpec("icp", pattern="2:4", wbits=4, compensation={"lr": 1e-3})
    out = run_all(model_dir, spec, tmp, name="q")
    checked = verify_pruned(out, spec.to_dict())
    assert checked["layers"] > 0 and checked["on_grid"] > 0 and checked["nm_groups"] > 0
    tensors = load_file(str(out / "model.safetensors"))
    adapter = adapter_for(load_config(out).model_type)
    key = adapter.block_prefix(1) + next(iter(adapter.linear_roles)) + ".weight"
    tensors[key] = tensors[key] + 1e-3 * torch.rand_like(tensors[key])
    save_file(tensors, str(out / "model.safetensors"))
    with pytest.raises(ValueError, match="grid|non-zeros"):
        verify_pruned(out, spec.to_dict())


def test_large_vocabulary_nll_is_summed_a_few_windows_at_a_time(monkeypatch):
    """The chunked NLL (for batches whose logits are large) equals the one-reduction NLL."""
    import icp.evaluate.perplexity as ppl

    g = torch.Generator().manual_seed(0)
    logits, windows = torch.randn(5, 32, 300, generator=g), torch.randint(0, 300, (5, 32), generator=g)
    whole = ppl._window_nll(logits, windows)
    monkeypatch.setattr(ppl, "NLL_CHUNK_ELEMENTS", 2 * 32 * 300)  # two windows at a time
    chunked = ppl._window_nll(logits, windows)
    assert abs(float(chunked) - float(whole)) <= 1e-5 * float(whole)
    monkeypatch.setattr(ppl, "NLL_CHUNK_ELEMENTS", 1)  # one window at a time
    assert abs(float(ppl._window_nll(logits, windows)) - float(whole)) <= 1e-5 * float(whole)


@pytest.mark.parametrize("method", ["wanda", "icp"])
def test_a_consuming_step_gives_the_same_results_and_lets_its_input_streams_go(setup, method, monkeypatch):
    """`run_step(consume=True)` (what the jobs run) against the step that leaves the caller's streams
    alone: the same pruned blocks and streams bit for bit, the caller's object emptied, and during
    ICP's compensation two streams alive instead of four."""
    import gc

    import icp.engine as engine
    from icp.engine import Streams, run_step
    from icp.runs import make_plan

    model_dir, model, tmp, evals = setup
    config = load_config(model_dir)
    runner = BlockRunner(adapter_for(config.model_type), config, CheckpointReader(model_dir), "cpu", torch.float32, 32)
    plan = make_plan(RunSpec(method, sparsity=0.5, compensation={"lr": 1e-3}), runner)
    x0 = torch.load(tmp / "x0.pt")["block0_inputs"]
    alive_in_compensation: list[int] = []
    real_compensate = engine.compensate

    def counting_compensate(*args, **kwargs):
        alive_in_compensation.append(sum(isinstance(o, torch.Tensor) and o.shape == x0.shape for o in gc.get_objects()))
        return real_compensate(*args, **kwargs)

    monkeypatch.setattr(engine, "compensate", counting_compensate)

    def walk(consume: bool):
        alive_in_compensation.clear()
        streams, pending, blocks = Streams.from_block0(x0.clone(), plan), None, []
        for index in range(runner.num_blocks):
            given = streams
            result = run_step(runner, index, streams, pending, plan, consume=consume)
            if consume:
                assert given.error is None and given.dense is None
            else:
                assert given.error is not None
            streams, pending = result.streams, result.pending
            blocks.append(result.block)
        # the last streams as bytes: tensors kept from one walk would be counted in the other's census
        last = [t.numpy().tobytes() for t in (streams.error, streams.dense)]
        return blocks, last, list(alive_in_compensation)

    kept_blocks, kept_last, kept_alive = walk(consume=False)
    blocks, last, alive = walk(consume=True)
    for kept, got in zip(kept_blocks, blocks):
        assert kept.keys() == got.keys()
        assert all(torch.equal(kept[name], got[name]) for name in kept)
    assert kept_last == last
    if method == "icp":  # x0 itself, then the step's error output and target (and, kept, its two inputs)
        assert alive == [3] * (runner.num_blocks - 1)
        assert kept_alive == [4] + [5] * (runner.num_blocks - 2)


def test_a_failed_sparsegpt_factorisation_names_its_block_and_layer(setup):
    """On a deep model "the Hessian is not positive definite" alone does not say where to look."""
    from icp.engine import prune_block
    from icp.runs import make_plan

    model_dir, model, tmp, evals = setup
    config = load_config(model_dir)
    runner = BlockRunner(adapter_for(config.model_type), config, CheckpointReader(model_dir), "cpu", torch.float32, 32)
    plan = make_plan(RunSpec("sparsegpt", sparsity=0.5), runner)
    inputs = torch.load(tmp / "x0.pt")["block0_inputs"].clone()
    inputs[0, 3] = float("nan")
    with pytest.raises(torch.linalg.LinAlgError, match=r"^block 1, layer \S+: SparseGPT: the dampened layer Hessian"):
        prune_block(runner, runner.load(1), 1, inputs, plan)

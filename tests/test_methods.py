import pytest
import torch
from torch import nn

from icp.methods import make_pruner
from icp.methods.masks import check_nm, nm_mask
from icp.methods.pattern import Pattern, parse_pattern
from icp.methods.quant import ChannelGrid


def layer_and_inputs(rows=48, cols=64, tokens=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    layer = nn.Linear(cols, rows, bias=False)
    layer.weight.data = torch.randn(rows, cols, generator=g)
    # correlated inputs with uneven feature scales, as real activations have
    scales = torch.rand(cols, generator=g) * 3 + 0.1
    x = (torch.randn(tokens, cols, generator=g) @ (torch.eye(cols) + 0.3 * torch.randn(cols, cols, generator=g))) * scales
    return layer, x


def prune_with(method, layer, x, pattern):
    pruner = make_pruner(method, layer)
    if pruner.needs_inputs:
        for chunk in x.split(128):
            pruner.add_batch(chunk.unsqueeze(0))
    return pruner.prune(pattern)


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.9])
def test_unstructured_sparsity_is_exact(method, sparsity):
    layer, x = layer_and_inputs()
    prune_with(method, layer, x, Pattern(sparsity=sparsity))
    zeros = int((layer.weight == 0).sum())
    expected = round(sparsity * layer.weight.numel())
    assert abs(zeros - expected) <= layer.weight.shape[0]  # per-row / per-block rounding at most


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize("n,m", [(2, 4), (4, 8)])
def test_nm_groups_hold(method, n, m):
    layer, x = layer_and_inputs()
    result = prune_with(method, layer, x, Pattern(n=n, m=m))
    assert check_nm(layer.weight.data, n, m)
    assert result.sparsity == pytest.approx(1 - n / m)


def test_wanda_mask_matches_formula():
    layer, x = layer_and_inputs()
    w = layer.weight.data.clone()
    result = prune_with("wanda", layer, x, Pattern(sparsity=0.5))
    score = w.abs() * x.pow(2).sum(0).sqrt().unsqueeze(0)  # |W_ij| * ||X_j||_2 (scaling per column is irrelevant)
    k = w.shape[1] // 2
    expected = torch.zeros_like(w, dtype=torch.bool)
    expected.scatter_(1, score.argsort(dim=1)[:, :k], True)
    assert torch.equal(result.mask, expected)
    assert torch.equal(layer.weight.data, w.masked_fill(expected, 0))


def test_magnitude_removes_smallest():
    layer, x = layer_and_inputs()
    w = layer.weight.data.clone()
    prune_with("magnitude", layer, x, Pattern(sparsity=0.3))
    kept = w[layer.weight.data != 0].abs()
    removed = w[layer.weight.data == 0].abs()
    assert removed.max() <= kept.min()


def test_sparsegpt_at_zero_sparsity_changes_nothing():
    layer, x = layer_and_inputs()
    w = layer.weight.data.clone()
    prune_with("sparsegpt", layer, x, Pattern(sparsity=0.0))
    assert torch.allclose(layer.weight.data, w, atol=1e-5)


@pytest.mark.parametrize("pattern", [Pattern(sparsity=0.5), Pattern(n=2, m=4)])
def test_sparsegpt_reconstructs_best(pattern):
    errors = {}
    for method in ("magnitude", "wanda", "sparsegpt"):
        layer, x = layer_and_inputs()
        dense = layer.weight.data.clone()
        prune_with(method, layer, x, pattern)
        errors[method] = float((x @ dense.t() - x @ layer.weight.data.t()).norm())
    assert errors["sparsegpt"] < errors["wanda"]
    assert errors["sparsegpt"] < errors["magnitude"]


def test_quantized_weights_lie_on_grid_and_joint_beats_rtn():
    layer, x = layer_and_inputs()
    dense = layer.weight.data.clone()
    pattern = Pattern(n=2, m=4, wbits=4)
    result = prune_with("sparsegpt", layer, x, pattern)
    assert result.grid is not None and result.grid.on_grid(layer.weight.data)
    assert check_nm(layer.weight.data, 2, 4)
    joint = float((x @ dense.t() - x @ layer.weight.data.t()).norm())

    # SparseGPT 2:4 first, then round-to-nearest int4 on the dense weight's grid
    layer2, _ = layer_and_inputs()
    prune_with("sparsegpt", layer2, x, Pattern(n=2, m=4))
    grid = ChannelGrid.fit(dense, 4)
    rtn = float((x @ dense.t() - x @ grid.quantize(layer2.weight.data).t()).norm())
    assert joint < rtn


def test_grid_keeps_zero_and_levels():
    w = torch.randn(8, 32)
    grid = ChannelGrid.fit(w, 3)
    q = grid.quantize(w)
    assert torch.equal(grid.quantize(torch.zeros(8, 32)), torch.zeros(8, 32))
    for row in range(8):
        assert q[row].unique().numel() <= 8


def test_bad_patterns_are_named():
    with pytest.raises(ValueError, match="sparsity"):
        Pattern(sparsity=1.0)
    with pytest.raises(ValueError, match="N:M"):
        parse_pattern("4:4")
    with pytest.raises(ValueError, match="unknown sparsity pattern"):
        parse_pattern("half")
    with pytest.raises(ValueError, match="divisible"):
        nm_mask(torch.randn(4, 6), 2, 4)
    with pytest.raises(ValueError, match="unknown pruning method"):
        make_pruner("random", nn.Linear(4, 4))


def test_lowest_k_mask_is_exact_with_ties():
    from icp.methods.masks import lowest_k_mask

    scores = torch.tensor([[1.0, 2.0, 2.0, 2.0], [0.5, 2.0, 3.0, 2.0]])
    mask = lowest_k_mask(scores, 4)
    assert int(mask.sum()) == 4
    assert mask[0, 0] and mask[1, 0]
    assert torch.equal(lowest_k_mask(scores, 0), torch.zeros_like(mask))


def test_shared_hessian_gives_the_same_weights_as_separate_ones():
    """q/k/v read one input: one shared Hessian and inverse factor must equal three separate ones."""
    from icp.methods import make_pruners

    layers, x = {}, None
    for i, name in enumerate(["q", "k", "v", "o"]):
        layer, x_i = layer_and_inputs(seed=i)
        layers[name] = layer
        x = x_i if x is None else x
    separate = {name: nn.Linear(64, 48, bias=False) for name in layers}
    for name in layers:
        separate[name].weight.data = layers[name].weight.data.clone()
    shared = make_pruners("sparsegpt", layers, shared_inputs=[("q", "k", "v")])
    alone = make_pruners("sparsegpt", separate)
    assert shared["k"].hessian is shared["q"].hessian and shared["o"].hessian is not shared["q"].hessian
    assert alone["k"].hessian is not alone["q"].hessian
    for pruners in (shared, alone):
        for chunk in x.split(128):
            for pruner in pruners.values():
                pruner.add_batch(chunk.unsqueeze(0))
    assert shared["q"].hessian.tokens == x.shape[0] and shared["k"].hessian.tokens == x.shape[0]
    for name in layers:
        pattern = Pattern(n=2, m=4, wbits=4) if name == "v" else Pattern(sparsity=0.6)
        shared[name].prune(pattern)
        alone[name].prune(pattern)
        assert torch.equal(layers[name].weight.data, separate[name].weight.data), name
    assert shared["q"].hessian.matrix is None and shared["q"].hessian._factor is None  # freed after the last


def test_sparsegpt_kernel_option_is_checked():
    layer, _ = layer_and_inputs()
    with pytest.raises(ValueError, match="kernel"):
        make_pruner("sparsegpt", layer, {"kernel": "cuda-magic"})
    pruner = make_pruner("sparsegpt", layer, {"kernel": "triton"})
    pruner.add_batch(torch.randn(1, 16, 64))
    with pytest.raises(ValueError, match="CUDA"):  # the fused sweep is never silently used on the CPU
        pruner.prune(Pattern(sparsity=0.5))


def test_fused_sweep_equals_plain_sweep_under_triton_interpreter():
    """The Triton SparseGPT sweep, run by Triton's CPU interpreter, against the plain torch sweep:
    unstructured, 2:4, 4:8, int4 and int3 on random blocks (the GPU run is benchmarks/gpu_checks.py)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("triton")
    script = Path(__file__).parent / "scripts" / "sweep_kernel_check.py"
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 6 and all('"ok": true' in line for line in lines)


@pytest.mark.parametrize("pattern", [Pattern(sparsity=0.6), Pattern(n=2, m=4), Pattern(sparsity=0.5, wbits=4)])
def test_lazy_column_groups_equal_the_reference_update_order(pattern):
    """The lazy_columns option's updates (columns past a group updated once per group) against the
    reference order (every later column after every block): the same masks, weights to rounding."""
    from icp.methods.quant import ChannelGrid
    from icp.methods.sparsegpt import InputHessian, sweep_blocks, sweep_columns

    g = torch.Generator().manual_seed(3)
    columns = 640
    hessian = InputHessian(columns, "cpu")
    hessian.add_batch(torch.randn(2048, columns, generator=g) * (torch.rand(columns, generator=g) + 0.1))
    hinv, _ = hessian.inverse_factor(0.01)
    weight = torch.randn(48, columns, generator=g)
    grid = ChannelGrid.fit(weight, pattern.wbits) if pattern.quantize else None
    reference, grouped = weight.clone(), weight.clone()
    mask_reference = sweep_blocks(reference, hinv, pattern, grid, sweep_columns, 64, 64)
    mask_grouped = sweep_blocks(grouped, hinv, pattern, grid, sweep_columns, 64, 256)
    assert torch.equal(mask_reference, mask_grouped)
    assert float((grouped - reference).abs().max()) < 1e-4 * float(reference.abs().max())
    assert not torch.equal(reference, weight)


def test_sparsegpt_reports_a_hessian_that_is_not_positive_definite():
    layer = nn.Linear(8, 4, bias=False)
    pruner = make_pruner("sparsegpt", layer, {"percdamp": 0.0})
    pruner.add_batch(torch.full((1, 16, 8), float("nan")))
    with pytest.raises(torch.linalg.LinAlgError, match=r"positive definite .*raise percdamp from 0.0\)"):
        pruner.prune(Pattern(sparsity=0.5))


def test_flip_factor_equals_the_reference_factor():
    """One factorisation by the flip (the flip_factor option) gives the reference's upper factor of H^-1."""
    from icp.methods.sparsegpt import InputHessian

    g = torch.Generator().manual_seed(5)
    factors = []
    for by_flip in (False, True):
        hessian = InputHessian(96, "cpu")
        hessian.add_batch(torch.randn(512, 96, generator=torch.Generator().manual_seed(1)))
        factors.append(hessian.inverse_factor(0.01, by_flip=by_flip)[0])
    reference, flipped = factors
    assert torch.allclose(flipped, reference, rtol=1e-4, atol=1e-6)
    assert torch.equal(flipped.tril(-1), torch.zeros_like(flipped))  # upper triangular


@pytest.mark.parametrize("pattern", [Pattern(sparsity=0.5), Pattern(n=2, m=4, wbits=4)])
def test_lazy_and_flip_options_prune_as_the_default_up_to_rounding(pattern):
    g = torch.Generator().manual_seed(7)
    weight, inputs = torch.randn(32, 1536, generator=g), torch.randn(2, 1024, 1536, generator=g)
    results = {}
    for name, options in {"default": {}, "lazy": {"lazy_columns": 512},
                          "both": {"lazy_columns": 1024, "flip_factor": True}}.items():
        layer = nn.Linear(1536, 32, bias=False)
        layer.weight.data = weight.clone()
        pruner = make_pruner("sparsegpt", layer, options)
        pruner.add_batch(inputs)
        results[name] = (pruner.prune(pattern).mask, layer.weight.data.clone())
    for name in ("lazy", "both"):
        assert torch.equal(results["default"][0], results[name][0])
        assert float((results["default"][1] - results[name][1]).abs().max()) < 1e-4 * float(weight.abs().max())
    if not pattern.quantize:  # (quantized weights land on the same grid points)
        assert not torch.equal(results["default"][1], results["lazy"][1])  # the option did take effect


def test_lazy_columns_must_hold_whole_blocks():
    layer = nn.Linear(512, 8, bias=False)
    make_pruner("sparsegpt", layer, {"blocksize": 64, "lazy_columns": 256})
    with pytest.raises(ValueError, match="multiple of blocksize"):
        make_pruner("sparsegpt", layer, {"lazy_columns": 200})


def test_lazy_columns_and_flip_factor_name_their_own_runs_and_the_kernel_does_not():
    from icp.spec import RunSpec

    names = {RunSpec("sparsegpt", sparsity=0.5, method_options=options).resume_key().__repr__()
             for options in ({}, {"kernel": "torch"})}
    assert len(names) == 1
    for options in ({"flip_factor": True}, {"lazy_columns": 1024}):
        assert repr(RunSpec("sparsegpt", sparsity=0.5, method_options=options).resume_key()) not in names


@pytest.mark.parametrize("by_flip", [False, True])
def test_sparsegpt_factorisation_frees_the_hessian_once_factored(monkeypatch, by_flip):
    """Peak memory: the Hessian (1 GiB for a 16384-wide layer) is gone before the inversion step
    runs (`cholesky_inverse`, or the flip's triangular solve), where the most n x n matrices are
    alive; the factor is the same either way (the same operations)."""
    import weakref

    from icp.methods.sparsegpt import InputHessian

    torch.manual_seed(0)
    x = torch.randn(512, 48)
    reference = InputHessian(48, "cpu")
    reference.add_batch(x)
    expected = reference.inverse_factor(0.01, by_flip=by_flip)[0].clone()

    hessian = InputHessian(48, "cpu")
    hessian.add_batch(x)
    alive = weakref.ref(hessian.matrix)
    seen = []
    name, owner = ("solve_triangular", torch.linalg) if by_flip else ("cholesky_inverse", torch)
    original = getattr(owner, name)

    def watching(*args, **kwargs):
        seen.append(alive() is None)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, watching)
    factor = hessian.inverse_factor(0.01, by_flip=by_flip)[0]
    assert seen == [True], "the Hessian was still alive during the inversion step"
    assert torch.equal(factor, expected)

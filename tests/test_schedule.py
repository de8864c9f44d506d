import pytest

from icp.methods.pattern import Pattern
from icp.schedule import LayerShape, pruned_fraction, rearranged_map, uniform_map


def llama_like(blocks=4, hidden=64, mlp=160):
    layers = [("q", hidden * hidden), ("k", hidden * hidden // 2), ("v", hidden * hidden // 2), ("o", hidden * hidden),
              ("fc1", hidden * mlp), ("fc1", hidden * mlp), ("fc2", hidden * mlp)]
    return [[LayerShape(f"{role}{i}", role, n) for i, (role, n) in enumerate(layers)] for _ in range(blocks)]


@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (0.8, 1.0), (1.0, 0.9), (0.6, 0.8), (0.9, 0.7)])
@pytest.mark.parametrize("s", [0.1, 0.5, 0.7])
def test_total_sparsity_is_exact(alpha, beta, s):
    shapes = llama_like()
    smap = rearranged_map(shapes, Pattern(sparsity=s), alpha, beta)
    assert pruned_fraction(shapes, smap) == pytest.approx(s, abs=1e-12)


def test_alpha_prunes_last_block_less_and_beta_moves_qkv_to_fc2():
    shapes = llama_like()
    smap = rearranged_map(shapes, Pattern(sparsity=0.5), alpha=0.8, beta=0.9)
    last, first = smap[3], smap[0]
    assert last["o3"].sparsity == pytest.approx(0.4)
    assert first["o3"].sparsity > 0.5
    assert first["q0"].sparsity == pytest.approx(0.9 * first["o3"].sparsity)
    assert first["fc26"].sparsity > first["o3"].sparsity
    # each block keeps its own total under beta
    for b, block in enumerate(shapes):
        total = sum(l.numel for l in block)
        pruned = sum(l.numel * smap[b][l.name].sparsity for l in block)
        assert pruned / total == pytest.approx(smap[b]["o3"].sparsity)


def test_alpha_beta_one_is_uniform():
    shapes = llama_like()
    assert rearranged_map(shapes, Pattern(sparsity=0.6), 1.0, 1.0) == uniform_map(shapes, Pattern(sparsity=0.6))


def test_nm_stays_uniform():
    shapes = llama_like()
    assert rearranged_map(shapes, Pattern(n=2, m=4), 0.7, 0.8) == uniform_map(shapes, Pattern(n=2, m=4))


def test_out_of_range_rate_names_alpha_beta():
    with pytest.raises(ValueError, match=r"alpha=0.5, beta=0.2, s=0.9"):
        rearranged_map(llama_like(2), Pattern(sparsity=0.9), alpha=0.5, beta=0.2)
    with pytest.raises(ValueError, match="alpha"):
        rearranged_map(llama_like(), Pattern(sparsity=0.5), alpha=1.5)

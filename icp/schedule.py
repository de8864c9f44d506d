"""Per-layer sparsity maps: uniform, and ICP's inter-block (alpha) and intra-block (beta) rearrangements.

Both rearrangements keep the number of pruned weights exactly that of the uniform map:

- alpha: the last block (which no later block compensates) is pruned at alpha * s; the weights it
  keeps are removed instead from the earlier blocks, in proportion to their parameter counts, so
  every earlier block gets s + (1 - alpha) * s * P_last / P_earlier.
- beta: inside a block of sparsity s_b, the attention input projections (q, k, v, or a fused qkv)
  are pruned at beta * s_b and the second MLP linear (fc2 / down_proj / lin2) absorbs the
  difference: s_fc2 = s_b + (1 - beta) * s_b * P_qkv / P_fc2.

N:M patterns fix the sparsity of every group, so they are always uniform.
"""

from __future__ import annotations

from dataclasses import dataclass

from .methods.pattern import Pattern

# block index -> linear name -> pattern
SparsityMap = dict[int, dict[str, Pattern]]


@dataclass(frozen=True)
class LayerShape:
    name: str
    role: str
    numel: int


def uniform_map(shapes: list[list[LayerShape]], pattern: Pattern) -> SparsityMap:
    return {b: {layer.name: pattern for layer in block} for b, block in enumerate(shapes)}


def rearranged_map(shapes: list[list[LayerShape]], pattern: Pattern, alpha: float = 1.0, beta: float = 1.0) -> SparsityMap:
    """The alpha/beta map for an unstructured `pattern` (N:M patterns come back uniform)."""
    if not (0.0 < alpha <= 1.0):
        raise ValueError(f"alpha must lie in (0, 1], got {alpha}")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if pattern.is_nm or pattern.sparsity == 0:
        return uniform_map(shapes, pattern)

    s = pattern.sparsity
    block_sizes = [sum(layer.numel for layer in block) for block in shapes]
    block_rates = [s] * len(shapes)
    if len(shapes) > 1 and alpha != 1.0:
        last = len(shapes) - 1
        earlier = sum(block_sizes[:last])
        block_rates = [s + (1.0 - alpha) * s * block_sizes[last] / earlier] * last + [alpha * s]

    result: SparsityMap = {}
    for b, (block, s_block) in enumerate(zip(shapes, block_rates)):
        qkv = sum(layer.numel for layer in block if layer.role in ("q", "k", "v", "qkv"))
        fc2 = sum(layer.numel for layer in block if layer.role == "fc2")
        rates = {}
        for layer in block:
            rate = s_block
            if beta != 1.0 and layer.role in ("q", "k", "v", "qkv"):
                rate = beta * s_block
            elif beta != 1.0 and layer.role == "fc2":
                rate = s_block + (1.0 - beta) * s_block * qkv / fc2
            if not (0.0 <= rate < 1.0):
                raise ValueError(
                    f"alpha={alpha}, beta={beta}, s={s} give layer {layer.name} of block {b} a sparsity "
                    f"of {rate:.4f}, outside [0, 1); choose alpha/beta closer to 1"
                )
            rates[layer.name] = pattern.with_sparsity(rate)
        result[b] = rates
    return result


def pruned_fraction(shapes: list[list[LayerShape]], smap: SparsityMap) -> float:
    """Fraction of prunable weights the map removes (what the model-level sparsity will be)."""
    total = sum(layer.numel for block in shapes for layer in block)
    pruned = sum(layer.numel * smap[b][layer.name].target_sparsity for b, block in enumerate(shapes) for layer in block)
    return pruned / total

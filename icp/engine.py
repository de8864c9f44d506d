"""The block walk, written once for every family and method.

For block i the engine
  1. loads B_i (dense, or as the previous ICP step left it compensated),
  2. feeds its linears' inputs on the *error stream* (hidden states produced by the already
     pruned blocks 0..i-1) to one pruner per linear, and prunes each at its scheduled pattern,
  3. advances the error stream through the pruned B_i and, when asked, the dense *standard
     stream* through the dense B_i, recording the block-output error between the two,
  4. for ICP, compensates B_{i+1}: fed the new error stream, it is fine-tuned so that its output
     matches the dense B_{i+1}'s output on the standard stream (see `methods.icp`).
Only the blocks of the current window and the streams live on the compute device.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .methods import make_pruner
from .methods.icp import Compensation, compensate
from .models import FamilyAdapter
from .models.loading import CheckpointReader
from .schedule import LayerShape, SparsityMap

StateDict = dict[str, torch.Tensor]


@dataclass
class Streams:
    """Hidden states at a block boundary, [samples, seqlen, hidden].

    `error` is the input of the next block along the pruned path. `dense` is the dense path:
    the next block's input, or, when `dense_ahead`, already its dense output (ICP computes it one
    step early, as the compensation target). `dense` is None when nothing needs the dense path.
    """

    error: torch.Tensor
    dense: torch.Tensor | None = None
    dense_ahead: bool = False

    def pinned(self) -> "Streams":
        return Streams(self.error.pin_memory(), None if self.dense is None else self.dense.pin_memory(), self.dense_ahead)

    def to(self, device: torch.device | str) -> "Streams":
        return Streams(
            self.error.to(device), None if self.dense is None else self.dense.to(device), self.dense_ahead
        )


@dataclass
class StepResult:
    block: StateDict  # the finished (pruned) block, names relative to the block
    streams: Streams
    pending: StateDict | None  # ICP: the compensated next block, to be pruned at the next step
    record: dict[str, Any] = field(default_factory=dict)


@dataclass
class PrunePlan:
    """Everything that decides how a model is pruned (the engine's whole input besides data)."""

    method: str  # inner pruner: magnitude | wanda | sparsegpt
    sparsity: SparsityMap
    method_options: dict[str, Any] = field(default_factory=dict)
    compensation: Compensation | None = None  # set for ICP
    track_error: bool = True  # carry the dense stream and record per-block output error


class BlockRunner:
    """Loads blocks of one dense checkpoint and runs them over streams on one device."""

    def __init__(
        self,
        adapter: FamilyAdapter,
        config: Any,
        reader: CheckpointReader,
        device: torch.device | str,
        dtype: torch.dtype,
        seqlen: int,
        batch_size: int = 8,
    ) -> None:
        self.adapter = adapter
        self.config = config
        self.reader = reader
        self.device = torch.device(device)
        self.dtype = dtype
        self.batch_size = batch_size
        self.kwargs = adapter.block_kwargs(config, seqlen, self.device, dtype)

    @property
    def num_blocks(self) -> int:
        return self.adapter.num_blocks(self.config)

    def load(self, index: int, state: StateDict | None = None) -> nn.Module:
        """Block `index` on the compute device, from `state` or from the dense checkpoint."""
        if state is None:
            state = self.reader.read_prefix(self.adapter.block_prefix(index))
        with torch.device("meta"):
            block = self.adapter.build_block(self.config, index)
        block.load_state_dict(state, assign=True, strict=True)
        return block.to(device=self.device, dtype=self.dtype).eval()

    @torch.no_grad()
    def forward(self, block: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """Block output for every sample, in batches; the result stays where `hidden` is
        (streams may live in host memory while the block runs on the accelerator)."""
        offloaded = hidden.device.type == "cpu" and self.device.type == "cuda"
        out = torch.empty(hidden.shape, dtype=hidden.dtype, pin_memory=True) if offloaded else torch.empty_like(hidden)
        for start in range(0, hidden.shape[0], self.batch_size):
            batch = hidden[start : start + self.batch_size].to(self.device, non_blocking=True)
            result = self.adapter.run_block(block, batch, self.kwargs)
            out[start : start + self.batch_size].copy_(result, non_blocking=True)
        if offloaded:
            torch.cuda.synchronize(self.device)  # the host copies must land before anyone reads `out`
        return out

    @torch.no_grad()
    def mean_squared_error(self, a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
        """(mean (a - b)^2, mean b^2), computed batch by batch on the compute device."""
        diff = energy = torch.zeros((), device=self.device, dtype=torch.float64)
        for start in range(0, a.shape[0], self.batch_size):
            x = a[start : start + self.batch_size].to(self.device).float()
            y = b[start : start + self.batch_size].to(self.device).float()
            diff = diff + (x - y).pow(2).sum(dtype=torch.float64)
            energy = energy + y.pow(2).sum(dtype=torch.float64)
        return float(diff / a.numel()), float(energy / a.numel())

    def layer_shapes(self) -> list[list[LayerShape]]:
        """Prunable linears of every block with their role and size (built on the meta device)."""
        shapes = []
        for index in range(self.num_blocks):
            with torch.device("meta"):
                block = self.adapter.build_block(self.config, index)
            shapes.append(
                [
                    LayerShape(name, self.adapter.role(name), linear.weight.numel())
                    for name, linear in self.adapter.prunable_linears(block).items()
                ]
            )
        return shapes


def cpu_state(block: nn.Module) -> StateDict:
    return {k: v.detach().to("cpu").clone() for k, v in block.state_dict().items()}


def prune_block(runner: BlockRunner, block: nn.Module, index: int, inputs: torch.Tensor, plan: PrunePlan) -> dict[str, Any]:
    """Prune every linear of `block` at its scheduled pattern, with statistics from `inputs`."""
    linears = runner.adapter.prunable_linears(block)
    pruners = {name: make_pruner(plan.method, linear, plan.method_options) for name, linear in linears.items()}
    if any(p.needs_inputs for p in pruners.values()):
        hooks = [
            linear.register_forward_hook(lambda _m, args, _out, p=pruners[name]: p.add_batch(args[0].detach()))
            for name, linear in linears.items()
        ]
        try:
            runner.forward(block, inputs)
        finally:
            for h in hooks:
                h.remove()
    layers = {}
    for name, pruner in pruners.items():
        pattern = plan.sparsity[index][name]
        result = pruner.prune(pattern)
        layers[name] = {"target": pattern.target_sparsity, "sparsity": result.sparsity, "numel": result.mask.numel()}
        if result.grid is not None:
            layers[name]["grid"] = result.grid.to_dict()
    return layers


GRID_PREFIX = "__grid__."


def _finished_state(block: nn.Module, layers: dict[str, Any]) -> StateDict:
    """The block's weights plus, for quantized layers, their grids (kept out of the JSON record)."""
    state = cpu_state(block)
    for name, info in layers.items():
        grid = info.pop("grid", None)
        if grid is not None:
            for key, value in grid.items():
                state[f"{GRID_PREFIX}{name}.{key}"] = value.contiguous()
    return state


def run_step(runner: BlockRunner, index: int, streams: Streams, pending: StateDict | None, plan: PrunePlan) -> StepResult:
    """One window step at block `index` (see module docstring)."""
    started = time.perf_counter()
    block = runner.load(index, pending)
    needs_dense = plan.track_error or plan.compensation is not None
    dense_block = runner.load(index) if needs_dense and not streams.dense_ahead else None

    layers = prune_block(runner, block, index, streams.error, plan)
    error_out = runner.forward(block, streams.error)
    record: dict[str, Any] = {"block": index, "layers": layers}

    dense_out = None
    if needs_dense:
        if streams.dense is None:
            raise ValueError("this plan needs the dense stream, but the streams carry none")
        dense_out = streams.dense if streams.dense_ahead else runner.forward(dense_block, streams.dense)
        mse, energy = runner.mean_squared_error(error_out, dense_out)
        record["output_mse"] = mse
        record["output_rel_mse"] = mse / max(energy, 1e-30)
    del dense_block

    new_pending = None
    next_streams = Streams(error_out, dense_out, dense_ahead=False)
    if plan.compensation is not None and index + 1 < runner.num_blocks:
        next_dense = runner.load(index + 1)
        target = runner.forward(next_dense, dense_out)
        trained = next_dense  # B_{i+1} is still dense here; train it in place
        record["compensation"] = compensate(
            trained, runner.adapter, runner.kwargs, error_out, target, plan.compensation, seed_offset=index + 1
        )
        new_pending = cpu_state(trained)
        next_streams = Streams(error_out, target, dense_ahead=True)
        del next_dense, trained

    record["seconds"] = time.perf_counter() - started
    return StepResult(block=_finished_state(block, layers), streams=next_streams, pending=new_pending, record=record)

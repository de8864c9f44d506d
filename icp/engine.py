"""The block walk, written once for every family and method.

For block i the engine
  1. loads B_i (dense, or as the previous ICP step left it compensated),
  2. feeds its linears' inputs on the *error stream* (hidden states produced by the already
     pruned blocks 0..i-1) to one pruner per linear, and prunes each at its scheduled pattern,
  3. advances the error stream through the pruned B_i and, when asked, the dense *standard
     stream* through the dense B_i, recording the block-output error between the two,
  4. for ICP, compensates B_{i+1}: fed the new error stream, it is fine-tuned so that its output
     matches the dense B_{i+1}'s output on the standard stream (see `methods.compensation`).
Only the blocks of the current window and the streams live on the compute device.
"""

from __future__ import annotations

import functools
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .methods import make_pruners
from .methods.compensation import Compensation, compensate
from .models import FamilyAdapter
from .models.loading import CheckpointReader
from .schedule import LayerShape, SparsityMap

StateDict = dict[str, torch.Tensor]
Pending = StateDict | nn.Module | None  # ICP's compensated next block: a module on the device, or saved weights


@dataclass
class Streams:
    """Hidden states at a block boundary, [samples, seqlen, hidden].

    `error` is the input of the next block along the pruned path. `dense` is the dense path:
    the next block's input, or, when `dense_ahead`, already its dense output (ICP computes it one
    step early, as the compensation target). `dense` is None when nothing needs the dense path.
    """

    error: torch.Tensor | None  # None only once a consuming step (`run_step`) has taken the streams over
    dense: torch.Tensor | None = None
    dense_ahead: bool = False

    @classmethod
    def from_block0(cls, inputs: torch.Tensor, plan: "PrunePlan") -> "Streams":
        """The streams before block 0: the dense inputs are both paths' (one tensor, not a copy)."""
        return cls(inputs, inputs if plan.needs_dense else None)

    def placed(self, device: torch.device | str, offload: bool) -> "Streams":
        """On the compute `device`, or with `offload` in host memory (see `place_stream`)."""
        return self._map(lambda t: place_stream(t, device, offload))

    def _map(self, move) -> "Streams":
        error = move(self.error)
        if self.dense is None or self.dense is self.error:  # at block 0 both streams are one tensor
            return Streams(error, None if self.dense is None else error, self.dense_ahead)
        return Streams(error, move(self.dense), self.dense_ahead)


def place_stream(hidden: torch.Tensor, device: torch.device | str, offload: bool) -> torch.Tensor:
    """A stream on the compute `device`, or with `offload` in host memory (pinned when the compute
    device is CUDA: faster, asynchronous copies)."""
    if not offload:
        return hidden.to(device)
    return hidden.to("cpu").pin_memory() if torch.device(device).type == "cuda" else hidden.to("cpu")


@dataclass
class StepResult:
    block: StateDict  # the finished (pruned) block, names relative to the block
    streams: Streams
    pending: nn.Module | None  # ICP: the compensated next block (on the device), to be pruned at the next step
    record: dict[str, Any] = field(default_factory=dict)


@dataclass
class PrunePlan:
    """Everything that decides how a model is pruned (the engine's whole input besides data)."""

    method: str  # inner pruner: magnitude | wanda | sparsegpt
    sparsity: SparsityMap
    method_options: dict[str, Any] = field(default_factory=dict)
    compensation: Compensation | None = None  # set for ICP
    track_error: bool = True  # carry the dense stream and record per-block output error

    @property
    def needs_dense(self) -> bool:
        """Whether the walk carries the dense stream (for the error record, or ICP's targets)."""
        return self.track_error or self.compensation is not None


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
        self.seqlen = seqlen
        self._kwargs: dict[Any, dict[str, Any]] = {}  # per block kind (see FamilyAdapter.block_kind)
        self._host_blocks: dict[int, Future] = {}  # CUDA: dense blocks read ahead into pinned memory
        self._reads: ThreadPoolExecutor | None = None

    def kwargs(self, index: int) -> dict[str, Any]:
        """The call arguments of block `index` (its mask, rotary table, ...), built once per kind."""
        kind = self.adapter.block_kind(self.config, index)
        if kind not in self._kwargs:
            self._kwargs[kind] = self.adapter.block_kwargs(self.config, index, self.seqlen, self.device, self.dtype)
        return self._kwargs[kind]

    @property
    def num_blocks(self) -> int:
        return self.adapter.num_blocks(self.config)

    def load(self, index: int, state: Pending = None) -> nn.Module:
        """Block `index` on the compute device: `state` itself when it is a module already, else
        built from the weights in `state`, or from the dense checkpoint."""
        if isinstance(state, nn.Module):
            return state.to(device=self.device, dtype=self.dtype).eval()
        if state is None:
            state = self.dense_state(index)
        with torch.device("meta"):
            block = self.adapter.build_block(self.config, index)
        block.load_state_dict(state, assign=True, strict=True)
        return block.to(device=self.device, dtype=self.dtype, non_blocking=True).eval()

    def dense_state(self, index: int) -> StateDict:
        """Block `index`'s dense weights in host memory. With a CUDA compute device the read runs
        one block ahead on a helper thread, into pinned memory (the copy to the device is then
        asynchronous and the next block's read overlaps this block's work); the values are the
        reader's either way."""
        if self.device.type != "cuda":
            return self.reader.read_prefix(self.adapter.block_prefix(index))
        ahead = self._host_blocks.get(index) or self._read_ahead(index)
        state = ahead.result()
        for done in [i for i in self._host_blocks if i < index - 1]:  # ICP reloads the block before
            del self._host_blocks[done]
        if index + 1 < self.num_blocks and index + 1 not in self._host_blocks:
            self._read_ahead(index + 1)
        return state

    def _read_ahead(self, index: int) -> Future:
        if self._reads is None:
            self._reads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="block-read-ahead")
        future = self._reads.submit(self._read_pinned, index)
        self._host_blocks[index] = future
        return future

    def _read_pinned(self, index: int) -> StateDict:
        state = self.reader.read_prefix(self.adapter.block_prefix(index))
        return {name: value.pin_memory() if value.device.type == "cpu" and not value.is_pinned() else value
                for name, value in state.items()}

    @torch.no_grad()
    def forward(self, block: nn.Module, hidden: torch.Tensor, index: int, keep_output: bool = True,
                in_place: bool = False) -> torch.Tensor | None:
        """Output of `block` (block `index` of the model) for every sample, in batches; the result stays where `hidden` is
        (streams may live in host memory while the block runs on the accelerator). With
        `keep_output=False` the outputs are dropped (a pass that only feeds forward hooks); with
        `in_place` each batch's output overwrites its input rows in `hidden`, which is returned
        (a batch's rows are read only by that batch, so the values are those of a fresh output)."""
        if hidden.device.type == "cpu" and self.device.type == "cuda":
            return self._forward_offloaded(block, hidden, index, keep_output, in_place)
        kwargs = self.kwargs(index)
        out = (hidden if in_place else torch.empty_like(hidden)) if keep_output else None
        for start in range(0, hidden.shape[0], self.batch_size):
            result = self.adapter.run_block(block, hidden[start : start + self.batch_size].to(self.device), kwargs)
            if out is not None:
                out[start : start + self.batch_size].copy_(result)
        return out

    def _forward_offloaded(self, block: nn.Module, hidden: torch.Tensor, index: int, keep_output: bool,
                           in_place: bool) -> torch.Tensor | None:
        """`forward` for streams in (pinned) host memory: a side CUDA stream copies batch k+1 in and
        batch k-1 out while batch k computes (in order on that stream, so batch k's rows are read
        before its output can overwrite them)."""
        out = None
        if keep_output:
            out = hidden if in_place else torch.empty(hidden.shape, dtype=hidden.dtype, pin_memory=True)
        compute = torch.cuda.current_stream(self.device)
        copies = torch.cuda.Stream(self.device)
        starts = list(range(0, hidden.shape[0], self.batch_size))
        kwargs = self.kwargs(index)

        def fetch(start: int) -> tuple[torch.Tensor, torch.cuda.Event]:
            with torch.cuda.stream(copies):
                batch = hidden[start : start + self.batch_size].to(self.device, non_blocking=True)
                return batch, copies.record_event()

        ahead = fetch(starts[0])
        for k, start in enumerate(starts):
            batch, arrived = ahead
            compute.wait_event(arrived)
            batch.record_stream(compute)
            if k + 1 < len(starts):
                ahead = fetch(starts[k + 1])
            result = self.adapter.run_block(block, batch, kwargs)
            if out is not None:
                finished = compute.record_event()
                with torch.cuda.stream(copies):
                    copies.wait_event(finished)
                    out[start : start + self.batch_size].copy_(result, non_blocking=True)
                    result.record_stream(copies)
        copies.synchronize()  # the host copies must land before anyone reads `out`
        compute.synchronize()
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
        return layer_shapes(self.adapter, self.config)


def layer_shapes(adapter: Any, config: Any) -> list[list[LayerShape]]:
    """Prunable linears of every block with their role and size (built on the meta device: no weights)."""
    shapes = []
    for index in range(adapter.num_blocks(config)):
        with torch.device("meta"):
            block = adapter.build_block(config, index)
        shapes.append([LayerShape(name, adapter.role(name), linear.weight.numel())
                       for name, linear in adapter.prunable_linears(block).items()])
    return shapes


def cpu_state(block: nn.Module) -> StateDict:
    """A copy of the block's tensors in host memory. From CUDA they land in pinned memory: a copy
    into pageable memory can be several times slower (and the caching host allocator recycles
    pinned blocks once the written copies are dropped)."""
    state = {}
    for name, value in block.state_dict().items():
        if value.is_cuda:
            state[name] = torch.empty(value.shape, dtype=value.dtype, pin_memory=True)
            state[name].copy_(value.detach(), non_blocking=True)
        else:
            state[name] = value.detach().clone()
    if any(v.is_cuda for v in block.state_dict().values()):
        torch.cuda.synchronize()
    return state


def prune_block(runner: BlockRunner, block: nn.Module, index: int, inputs: torch.Tensor, plan: PrunePlan) -> dict[str, Any]:
    """Prune every linear of `block` at its scheduled pattern, with statistics from `inputs`."""
    linears = runner.adapter.prunable_linears(block)
    pruners = make_pruners(plan.method, linears, plan.method_options, runner.adapter.shared_inputs)
    if any(p.needs_inputs for p in pruners.values()):
        statistics_pass(runner, block, index, inputs, linears, pruners)
    layers, reached = {}, {}
    for name, pruner in pruners.items():
        pattern = plan.sparsity[index][name]
        try:
            result = pruner.prune(pattern)
        except torch.linalg.LinAlgError as err:  # say where: a deep block's layer, not "a Hessian"
            raise torch.linalg.LinAlgError(f"block {index}, layer {name}: {err}") from err
        reached[name] = result.mask.float().mean()  # read below, once: no host sync between layers
        layers[name] = {"target": pattern.target_sparsity, "sparsity": None, "numel": result.mask.numel()}
        if result.grid is not None:
            layers[name]["grid"] = result.grid.to_dict()
    for name, fraction in reached.items():
        layers[name]["sparsity"] = float(fraction)
    return layers


def statistics_pass(runner: BlockRunner, block: nn.Module, index: int, inputs: torch.Tensor,
                    linears: dict[str, nn.Linear], pruners: dict[str, Any]) -> None:
    """Feed every pruner the inputs its linear sees, over all samples (the block's output is not needed).

    The first batch runs the block as it is and records the order its linears run in. If each ran
    once, the last one's product feeds nothing that is measured (only the block's output, which
    this pass drops), so for the other batches it is skipped: its input still reaches its pruner,
    and it returns zeros. The statistics are the same bit for bit; the pass saves the largest GEMM
    of most blocks (OPT's fc2, Llama's down_proj)."""
    order: list[str] = []

    def hook(_module: nn.Module, args: tuple, _output: Any, name: str) -> None:
        order.append(name)
        pruners[name].add_batch(args[0].detach())

    hooks = [linear.register_forward_hook(functools.partial(hook, name=name)) for name, linear in linears.items()]
    skipped: nn.Linear | None = None
    try:
        first = runner.batch_size
        runner.forward(block, inputs[:first], index, keep_output=False)
        if inputs.shape[0] > first:
            if len(order) == len(set(order)) == len(linears):
                skipped = linears[order[-1]]
                skipped.forward = functools.partial(_zeros_like_output, skipped)  # instance attribute: hooks still run
            runner.forward(block, inputs[first:], index, keep_output=False)
    finally:
        for h in hooks:
            h.remove()
        if skipped is not None:
            del skipped.forward


def _zeros_like_output(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return x.new_zeros(*x.shape[:-1], linear.out_features)


GRID_PREFIX = "__grid__."


def split_grids(finished: StateDict) -> tuple[StateDict, StateDict]:
    """A finished block's (weights, quantization grids); grid names lose GRID_PREFIX ("<layer>.scale")."""
    weights = {k: v for k, v in finished.items() if not k.startswith(GRID_PREFIX)}
    grids = {k[len(GRID_PREFIX):]: v for k, v in finished.items() if k.startswith(GRID_PREFIX)}
    return weights, grids


def _finished_state(block: nn.Module, layers: dict[str, Any]) -> StateDict:
    """The block's weights plus, for quantized layers, their grids (kept out of the JSON record)."""
    state = cpu_state(block)
    for name, info in layers.items():
        grid = info.pop("grid", None)
        if grid is not None:
            for key, value in grid.items():
                state[f"{GRID_PREFIX}{name}.{key}"] = value.contiguous()
    return state


def run_step(runner: BlockRunner, index: int, streams: Streams, pending: Pending, plan: PrunePlan,
             consume: bool = False) -> StepResult:
    """One window step at block `index` (see module docstring).

    With `consume` the step takes the caller's `streams` over: it empties the object, writes each
    block's outputs over its inputs and lets every tensor go once used, so during ICP's
    compensation two streams are alive instead of four (the values are the same). Without it
    `streams` is left as it was, for callers that run a step twice on the same inputs."""
    started = time.perf_counter()
    block = runner.load(index, pending)
    layers = prune_block(runner, block, index, streams.error, plan)
    record: dict[str, Any] = {"block": index, "layers": layers}
    next_streams, new_pending = advance(runner, index, block, streams, plan, record, compensate_next=True,
                                        consume=consume)
    record["seconds"] = time.perf_counter() - started
    return StepResult(block=_finished_state(block, layers), streams=next_streams, pending=new_pending, record=record)


def advance(runner: BlockRunner, index: int, block: nn.Module, streams: Streams, plan: PrunePlan,
            record: dict[str, Any], compensate_next: bool, consume: bool = False) -> tuple[Streams, nn.Module | None]:
    """Steps 3-4 of the window at block `index`, whose pruned version is `block`: the streams
    through it (recording the output error) and, for ICP, the compensated next block (trained only
    when `compensate_next`; a replay that already holds the next block skips the training but
    still computes its dense output, the next step's target). `consume`: see `run_step`."""
    if plan.needs_dense and streams.dense is None:
        raise ValueError("this plan needs the dense stream, but the streams carry none")
    error_in, dense_in, dense_ahead = streams.error, streams.dense, streams.dense_ahead
    if consume:
        streams.error = streams.dense = None  # the caller's object no longer keeps them alive
    shared = dense_in is error_in  # before block 0 both paths are one tensor: the dense path still reads it
    error_out = runner.forward(block, error_in, index, in_place=consume and not shared)
    del error_in
    dense_out = None
    if plan.needs_dense:
        dense_out = dense_in if dense_ahead else runner.forward(runner.load(index), dense_in, index, in_place=consume)
        mse, energy = runner.mean_squared_error(error_out, dense_out)
        record["output_mse"] = mse
        record["output_rel_mse"] = mse / max(energy, 1e-30)
    del dense_in
    if plan.compensation is None or index + 1 >= runner.num_blocks:
        return Streams(error_out, dense_out, dense_ahead=False), None
    next_block = runner.load(index + 1)  # B_{i+1}, still dense: its output is the target, then it trains in place
    target = runner.forward(next_block, dense_out, index + 1, in_place=consume)
    del dense_out
    if not compensate_next:
        return Streams(error_out, target, dense_ahead=True), None
    record["compensation"] = compensate(
        next_block, runner.adapter, runner.kwargs(index + 1), error_out, target, plan.compensation, seed_offset=index + 1
    )
    return Streams(error_out, target, dense_ahead=True), next_block


def replay_step(runner: BlockRunner, index: int, finished: StateDict, streams: Streams, plan: PrunePlan,
                compensate_next: bool, consume: bool = False) -> tuple[Streams, nn.Module | None]:
    """Rebuild the window state after an already finished block `index` (its pruned weights in
    `finished`) without pruning it again: what a resumed job does instead of reading saved streams.
    Bit-identical to the original step on the CPU (the same forwards; the same seeded training).
    `consume`: see `run_step`."""
    block = runner.load(index, split_grids(finished)[0])
    return advance(runner, index, block, streams, plan, {}, compensate_next, consume)

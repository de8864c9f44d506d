"""One call for library users: prune a model that is already in memory, then evaluate it.

    import icp
    report = icp.prune(model, texts, tokenizer=tokenizer, method="icp", sparsity=0.7)

`prune` composes the same stages the workflow's jobs run (block-0 inputs, the block walk of
`icp.engine`, the methods, the alpha/beta schedule) with nothing written to disk: the dense
blocks are read from the model itself and the pruned ones are written back into it. For the
same settings and calibration it gives the workflow's weights, bit for bit on the CPU.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .activations import block0_inputs
from .engine import BlockRunner, Streams, run_step, split_grids
from .models import ADAPTERS, FamilyAdapter, adapter_for
from .registry import METHODS
from .runs import make_plan
from .spec import Compensation, RunSpec

StateDict = dict[str, torch.Tensor]


@dataclass
class PruneReport:
    """What `prune` did: per-layer sparsity, per-block output error, time and peak GPU memory."""

    spec: dict[str, Any]
    layers: dict[str, dict[str, float]]  # "<block>.<linear>" -> {"target", "sparsity", "numel"}
    block_output_error: list[float | None]  # relative MSE of each block's output against the dense model's
    seconds: float
    peak_gpu_gib: float | None
    grids: dict[str, torch.Tensor] = field(default_factory=dict)  # quantized runs: "<layer>.scale" / ".zero"
    blocks: list[dict[str, Any]] = field(default_factory=list)  # the engine's per-block records (pruning.json's)

    @property
    def sparsity(self) -> float:
        """Measured fraction of pruned weights over all pruned linears."""
        total = sum(layer["numel"] for layer in self.layers.values())
        return sum(layer["sparsity"] * layer["numel"] for layer in self.layers.values()) / max(total, 1)


class _ModelBlocks:
    """The engine's checkpoint reader, over a model in memory: copies of one block's tensors."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def read_prefix(self, prefix: str) -> StateDict:
        state = {name[len(prefix):]: t.detach().to("cpu", copy=True)
                 for name, t in self.model.state_dict().items() if name.startswith(prefix)}
        if not state:
            raise KeyError(f"the model has no tensors under {prefix!r}")
        return state


def _family(model: nn.Module) -> tuple[str, Any]:
    """(model_type, config the adapter builds blocks from) of a transformers or segment-anything model."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type is not None:
        if model_type not in ADAPTERS:
            raise ValueError(f"model: unsupported family {model_type!r}; supported: {sorted(ADAPTERS)}")
        return model_type, config
    if hasattr(model, "image_encoder") and hasattr(model, "mask_decoder"):
        from .models.sam import MODEL_TYPE, SamConfig

        return MODEL_TYPE, SamConfig.from_model(model)
    raise ValueError(f"model: a Hugging Face OPT/Llama model or a segment-anything Sam is needed, "
                     f"got {type(model).__name__}")


def _check_number(name: str, value: Any, integer: bool = False) -> None:
    """A number argument of the right kind (a bool is not one), finite."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ValueError(f"{name}: must be {'a whole number' if integer else 'a number'}, got {value!r}")
    if not integer and not math.isfinite(value):
        raise ValueError(f"{name}: must be a finite number, got {value!r}")


def _calibration_inputs(calibration: Any, model_type: str, tokenizer, nsamples: int, seqlen: int,
                        seed: int, vocab_size: int | None = None) -> torch.Tensor:
    """Token windows [n, seqlen] (language models) or preprocessed images [n, 3, H, W] (SAM)."""
    from .models.sam import MODEL_TYPE as SAM

    if isinstance(calibration, torch.Tensor):
        if model_type == SAM:
            if calibration.dim() != 4 or calibration.shape[1] != 3:
                raise ValueError(f"calibration: SAM needs preprocessed images [n, 3, H, W], got {tuple(calibration.shape)}")
            return calibration
        if calibration.dim() != 2 or calibration.is_floating_point():
            raise ValueError(f"calibration: token windows must be an integer tensor [n, seqlen], got "
                             f"{calibration.dtype} {tuple(calibration.shape)}")
        if calibration.shape[1] < 2:
            raise ValueError(f"calibration: windows of {calibration.shape[1]} token(s) are too short")
        if calibration.shape[0] == 0:
            raise ValueError("calibration: no token windows (the tensor has 0 rows)")
        if vocab_size is not None and (int(calibration.min()) < 0 or int(calibration.max()) >= vocab_size):
            raise ValueError(f"calibration: token ids must lie in [0, {vocab_size}), got "
                             f"{int(calibration.min())}..{int(calibration.max())}")
        return calibration
    if model_type == SAM:
        raise ValueError("calibration: SAM needs a tensor of preprocessed images (see icp.data.images.calibration_images)")
    if isinstance(calibration, (str, dict)):  # a corpus: "wiki_offline", "c4", or a spec such as the config's
        from .data.corpora import load_corpus

        spec = {"source": calibration} if isinstance(calibration, str) else dict(calibration)
        if spec.get("source") == "wiki_offline":
            spec.setdefault("part", "calib")
        docs = load_corpus(spec)
    elif isinstance(calibration, (list, tuple)) and all(isinstance(d, str) for d in calibration):
        docs = list(calibration)
    else:
        raise ValueError("calibration: give token windows (a LongTensor [n, seqlen]), a list of texts with a "
                         f"tokenizer, or a corpus name; got {type(calibration).__name__}")
    if tokenizer is None:
        raise ValueError("tokenizer: calibration texts need the model's tokenizer")
    from .data.tokens import calibration_windows

    return calibration_windows(tokenizer, docs, nsamples, seqlen, seed)


def prune(
    model: nn.Module,
    calibration: Any,
    method: str = "icp",
    sparsity: float = 0.5,
    pattern: str = "unstructured",
    wbits: int = 16,
    device: str | None = None,
    *,
    tokenizer=None,
    nsamples: int = 128,
    seqlen: int = 2048,
    seed: int = 0,
    alpha: float = 0.8,
    beta: float = 0.9,
    compensation: dict[str, Any] | None = None,
    inner: str = "sparsegpt",
    method_options: dict[str, Any] | None = None,
    batch_size: int = 8,
    offload_streams: bool = False,
    track_error: bool = True,
    save_to: str | Path | None = None,
    log=None,
) -> PruneReport:
    """Prune `model` in place with `method` and return a `PruneReport`.

    model: a Hugging Face OPT or Llama causal LM, or a segment-anything `Sam` (its image encoder's
        blocks are pruned), on the CPU; blocks visit `device` one at a time.
    calibration: token windows (LongTensor [n, seqlen]); a list of texts (needs `tokenizer`; `nsamples`
        windows of `seqlen` tokens are drawn with `seed`); a corpus name ("wiki_offline", "c4",
        "wikitext2") or a corpus spec dict as in the config; for SAM, preprocessed images [n, 3, H, W].
    method: "magnitude", "wanda", "sparsegpt" or "icp" (whose pruner is `inner`, SparseGPT by default).
    sparsity / pattern / wbits: unstructured sparsity in [0, 1), or pattern "N:M" (e.g. "2:4"); weights
        quantized jointly to `wbits` < 16 bits.
    device: "cpu", "cuda", "cuda:N"; None takes CUDA when present.
    alpha, beta, compensation: ICP's inter-block and intra-block rearrangement and its compensation
        fine-tune (the fields of `icp.spec.Compensation`: epochs, lr, batch_size, optimizer, schedule,
        ...; left out, its defaults: one epoch at lr 1e-4); ignored by the other methods. The
        embedded workflow config runs alpha 0.8, beta 0.9 and lr 3e-4 (config/config.yaml).
    offload_streams: keep the hidden-state streams in host memory (least GPU memory).
    save_to: also save the pruned model there (`save_pretrained`, or model.safetensors for SAM).

    Raises ValueError naming the argument, before any work, for an unknown method or family, a
    sparsity, alpha or beta out of range, or calibration that cannot give the windows asked for.
    """
    from .provenance import resolve_device

    if method not in METHODS:
        raise ValueError(f"method: unknown {method!r}; known: {list(METHODS)}")
    for name, value in (("sparsity", sparsity), ("alpha", alpha), ("beta", beta)):
        _check_number(name, value)
    for name, value in (("nsamples", nsamples), ("seqlen", seqlen), ("seed", seed), ("wbits", wbits),
                        ("batch_size", batch_size)):
        _check_number(name, value, integer=True)
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    for name, value in (("compensation", compensation), ("method_options", method_options)):
        if value is not None and not isinstance(value, dict):
            raise ValueError(f"{name}: must be a dict of settings or None, got {type(value).__name__}")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity: must lie in [0, 1), got {sparsity!r}")
    if method == "icp":
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha: must lie in (0, 1], got {alpha!r}")
        if not beta > 0.0:
            raise ValueError(f"beta: must be > 0, got {beta!r}")
    if nsamples < 1 or seqlen < 2:
        raise ValueError(f"nsamples / seqlen: need at least one window of two tokens, got {nsamples} x {seqlen}")
    model_type, config = _family(model)
    try:
        spec = RunSpec(method, pattern=pattern, sparsity=float(sparsity), wbits=wbits, inner=inner,
                       alpha=alpha if method == "icp" else 1.0, beta=beta if method == "icp" else 1.0,
                       compensation=dict(compensation or {}) if method == "icp" else {},
                       method_options=dict(method_options or {}), track_error=track_error)
        if method == "icp":
            Compensation(**spec.compensation)
    except (TypeError, ValueError) as err:
        raise ValueError(f"pattern / wbits / inner / compensation: {err}") from None
    device = resolve_device(device or "auto")
    adapter: FamilyAdapter = adapter_for(model_type)
    inputs = _calibration_inputs(calibration, model_type, tokenizer, nsamples, seqlen, seed,
                                 getattr(config, "vocab_size", None))
    dtype = next(model.parameters()).dtype
    if inputs.is_floating_point():
        inputs = inputs.to(dtype)

    started = time.perf_counter()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    model.eval()
    hidden = block0_inputs(model, adapter, inputs)
    runner = BlockRunner(adapter, config, _ModelBlocks(model), device, hidden.dtype, hidden.shape[1], batch_size)
    plan = make_plan(spec, runner)
    streams = Streams.from_block0(hidden, plan).placed(device, offload_streams)
    del hidden  # the steps take the streams over (consume): nothing else may hold them
    pending = None
    layers: dict[str, dict[str, float]] = {}
    errors: list[float | None] = []
    step_records: list[dict[str, Any]] = []
    grids: dict[str, torch.Tensor] = {}
    blocks = adapter.blocks(model)
    for index in range(runner.num_blocks):
        result = run_step(runner, index, streams, pending, plan, consume=True)
        streams, pending = result.streams, result.pending
        weights, block_grids = split_grids(result.block)
        blocks[index].load_state_dict(weights, strict=True)  # the pruned block goes back into the model
        grids.update({adapter.block_prefix(index) + name: grid for name, grid in block_grids.items()})
        for name, info in result.record["layers"].items():
            layers[f"{index}.{name}"] = info
        errors.append(result.record.get("output_rel_mse"))
        step_records.append(result.record)
        if log:
            log(f"block {index + 1}/{runner.num_blocks} done in {result.record['seconds']:.1f}s")
    report = PruneReport(
        spec=spec.to_dict(), layers=layers, block_output_error=errors, seconds=time.perf_counter() - started,
        peak_gpu_gib=torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None, grids=grids,
        blocks=step_records,
    )
    if save_to is not None:
        _save(model, tokenizer, report, Path(save_to))
    return report


def _save(model: nn.Module, tokenizer, report: PruneReport, out: Path) -> None:
    import json

    from safetensors.torch import save_file

    from .checkpoint import GRIDS_FILE
    from .provenance import versions
    from .records import pruning_record

    out.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(out)
        if tokenizer is not None:
            tokenizer.save_pretrained(out)
    else:  # a segment-anything Sam: the pipeline's own layout, which load_model reads back
        from .models.sam import SamConfig

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
        (out / "config.json").write_text(json.dumps(SamConfig.from_model(model).to_json(), indent=1))
    if report.grids:
        save_file({k: v.contiguous() for k, v in report.grids.items()}, str(out / GRIDS_FILE))
    record = pruning_record(report.spec, report.blocks, versions=versions())
    record["quant_grids"] = GRIDS_FILE if report.grids else None
    (out / "pruning.json").write_text(json.dumps(record, indent=1))


def perplexity(model: nn.Module, data: Any, tokenizer=None, seqlen: int = 2048, max_windows: int | None = None,
               batch_size: int = 1, device: str | None = None) -> float:
    """Perplexity of a causal LM over `data`: token windows [n, seqlen], or texts (joined, then cut into
    windows of `seqlen` tokens, at most `max_windows`; needs `tokenizer`), as the workflow computes it."""
    from .data.tokens import evaluation_windows, tokenize_stream
    from .evaluate.perplexity import perplexity as whole_model_perplexity
    from .provenance import resolve_device

    if isinstance(data, torch.Tensor):
        windows = data
    else:
        if tokenizer is None:
            raise ValueError("tokenizer: perplexity over texts needs the model's tokenizer")
        windows = evaluation_windows(tokenize_stream(tokenizer, list(data)), seqlen, max_windows)
    model.to(resolve_device(device or "auto"))
    return whole_model_perplexity(model, windows, batch_size=batch_size)


def zero_shot(model: nn.Module, tokenizer, tasks: dict[str, dict[str, Any]] | list[str], limit: int | None = None,
              batch_size: int = 8, device: str | None = None, task_dir: str | None = None,
              shared_context: bool = False) -> dict[str, Any]:
    """Zero-shot accuracy through lm-eval on a model object: per task {metric, value, stderr, n} and the mean.
    `shared_context` scores each multiple-choice context once (`icp.evaluate.shared_context`)."""
    from .evaluate.zeroshot import evaluate_model
    from .provenance import resolve_device

    task_settings = {name: {} for name in tasks} if isinstance(tasks, list) else dict(tasks)
    settings = {"tasks": task_settings, "limit": limit, "batch_size": batch_size, "shared_context": shared_context}
    return evaluate_model(model, tokenizer, settings, resolve_device(device or "auto"), task_dir)


def sam_iou(model: nn.Module, images: Any, device: str | None = None, selection: str = "best_score",
            seed: int = 0) -> dict[str, Any]:
    """Single-point mIoU of a segment-anything Sam: `images` is an image-set spec as in the config
    ({"source": "sa1b", "dir": ...} or {"source": "coco", "annotations": ..., "images": ...}) or a
    list of `icp.evaluate.sam_iou.AnnotatedImage`."""
    from .evaluate.sam_iou import annotated_images, single_point_iou
    from .provenance import resolve_device

    if isinstance(images, dict):
        images = annotated_images(images, seed)
    return single_point_iou(model, images, resolve_device(device or "auto"), selection)


def dense_outputs(model: nn.Module, calibration: torch.Tensor, device: str | None = None, batch_size: int = 4) -> torch.Tensor:
    """The (dense) model's last hidden states on token windows [n, seqlen]: input compensation's
    targets, [n, seqlen, hidden] on the CPU. The model is left on the CPU."""
    from .methods.input_compensation import dense_targets
    from .provenance import resolve_device

    try:
        return dense_targets(model, adapter_for(_family(model)[0]), calibration, batch_size, resolve_device(device or "auto"))
    finally:
        model.cpu()


def input_compensation(
    pruned_model: nn.Module,
    dense: nn.Module | torch.Tensor,
    calibration: Any,
    *,
    tokenizer=None,
    nsamples: int = 128,
    seqlen: int = 2048,
    seed: int = 0,
    settings: dict[str, Any] | None = None,
    device: str | None = None,
    fold: bool = True,
    log=None,
) -> dict[str, Any]:
    """Input compensation (IC) of a pruned model, the workflow's `+ic` stage: a pool trained
    (pruned weights frozen) so that its last hidden states match the dense model's, then, with
    `fold`, folded into the input embeddings (untied from the head where tied), so the model stays
    an ordinary checkpoint. Returns the training record (per-epoch losses, seconds).
    For a segment-anything Sam (our adaptation): the pool corrects the patch embeddings, the target
    is the dense encoder's image embedding, and with `fold` the pool is attached to the patch
    embedding as `input_pool` (it cannot fold into weights); calibration: images [n, 3, H, W].

    dense: the dense model, or its last hidden states on `calibration` already ([n, seqlen, d],
        `dense_outputs`). calibration: token windows, texts or a corpus name, as for `prune`.
    settings: the fields of `icp.spec.InputCompensationSettings` (default: the IC paper's recipe,
        rank 32, 20 epochs at lr 1e-3 with warm-up, batch 1 with gradient accumulation 2).
    """
    from .methods.input_compensation import attach_input_pool, fold_into_embeddings, train_input_compensation
    from .provenance import resolve_device
    from .spec import stage_settings

    if settings is not None and not isinstance(settings, dict):
        raise ValueError(f"settings: must be a dict of settings or None, got {type(settings).__name__}")
    try:
        parsed = stage_settings("ic", dict(settings or {}))
    except (TypeError, ValueError) as err:
        raise ValueError(f"settings: {err}") from None
    model_type, config = _family(pruned_model)
    adapter = adapter_for(model_type)
    if adapter.input_embeddings(pruned_model) is None:
        raise ValueError(f"pruned_model: input compensation needs an input-embedding layer; a {model_type} model has none")
    tokens = _calibration_inputs(calibration, model_type, tokenizer, nsamples, seqlen, seed,
                                 getattr(config, "vocab_size", None))
    device = resolve_device(device or "auto")
    if isinstance(dense, torch.Tensor):
        targets = dense
    elif isinstance(dense, nn.Module):
        targets = dense_outputs(dense, tokens, device)
    else:
        raise ValueError(f"dense: the dense model or its last hidden states, got {type(dense).__name__}")
    if targets.shape[0] != tokens.shape[0] or (not tokens.is_floating_point() and targets.shape[:2] != tokens.shape):
        raise ValueError(f"dense: targets {tuple(targets.shape)} do not match the calibration inputs {tuple(tokens.shape)}")
    pool, record = train_input_compensation(pruned_model, adapter, tokens, targets, parsed, device,
                                            log=log or (lambda s: None))
    pruned_model.cpu()
    if fold and adapter.folds_input_pool:
        fold_into_embeddings(pruned_model, adapter, pool)
    elif fold:  # SAM: the pool stays a module on the patch embedding
        attach_input_pool(adapter.input_embeddings(pruned_model), pool)
    record["pool"] = pool
    return record

"""Entry points the workflow rules call: each parses its arguments, calls one stage, writes its output.

    python -m icp.cli <stage> --help
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

if __name__ == "__main__" and os.environ.get("ICP_FORKSERVER"):
    # a local workflow run keeps a preloaded process (icp/forkserver.py): hand the job to it
    # before importing torch; where it cannot take the job, the job runs here as usual
    from .forkserver import run_via_server

    _status = run_via_server(sys.argv[1:])
    if _status is not None:
        sys.exit(_status)

import torch  # noqa: E402

from . import provenance  # noqa: E402


def _log(message: str) -> None:
    print(f"[icp {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _write_json(path: str, data) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(path + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def cmd_export_dense(a: argparse.Namespace) -> None:
    from .models.loading import export_dense

    from dataclasses import asdict

    from .engine import layer_shapes
    from .experiments import SHAPES_FILE
    from .models import adapter_for
    from .models.loading import load_config

    export_dense(a.source, a.out, a.dtype, variant=a.variant, arch=json.loads(a.arch) if a.arch else None)
    config = load_config(a.out)
    shapes = layer_shapes(adapter_for(config.model_type), config)  # read by the dry run's alpha/beta checks
    (Path(a.out) / SHAPES_FILE).write_text(json.dumps([[asdict(layer) for layer in block] for block in shapes]))
    _log(f"dense checkpoint of {a.source} written to {a.out}")


def cmd_calibration(a: argparse.Namespace) -> None:
    from transformers import AutoTokenizer

    from .data.corpora import load_corpus
    from .data.tokens import calibration_windows

    corpus = json.loads(a.corpus)
    docs = load_corpus(corpus)
    tokenizer = AutoTokenizer.from_pretrained(a.model_dir)
    windows = calibration_windows(tokenizer, docs, a.nsamples, a.seqlen, a.seed, a.sampler)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    torch.save(windows, a.out)
    _log(f"{windows.shape[0]} calibration windows of {windows.shape[1]} tokens from {corpus['source']}")


def cmd_eval_tokens(a: argparse.Namespace) -> None:
    from transformers import AutoTokenizer

    from .data.corpora import load_corpus
    from .data.tokens import evaluation_windows, tokenize_stream

    corpus = json.loads(a.corpus)
    tokenizer = AutoTokenizer.from_pretrained(a.model_dir)
    ids = tokenize_stream(tokenizer, load_corpus(corpus), separator=corpus.get("separator", "\n\n"))
    windows = evaluation_windows(ids, a.seqlen, a.max_windows)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"windows": windows, "total_tokens": ids.numel()}, a.out)
    _log(f"{windows.shape[0]} evaluation windows of {a.seqlen} tokens (text has {ids.numel()} tokens)")


def cmd_activations(a: argparse.Namespace) -> None:
    from .activations import block0_inputs
    from .checkpoint import load_cached
    from .models import adapter_for
    from .models.loading import load_config, load_model
    from .runs import BLOCK0_KEY

    model, _ = load_model(a.model_dir, a.dtype)
    inputs = load_cached(a.tokens, "calibration_tokens / calibration_images")  # token windows, or SAM's images
    if inputs.is_floating_point():
        inputs = inputs.to(next(model.parameters()).dtype)
    hidden = block0_inputs(model, adapter_for(load_config(a.model_dir).model_type), inputs)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    torch.save({BLOCK0_KEY: hidden.contiguous()}, a.out)
    _log(f"block-0 inputs {tuple(hidden.shape)} cached")


def cmd_dense_outputs(a: argparse.Namespace) -> None:
    from .checkpoint import atomic_torch_save, load_cached
    from .methods.input_compensation import dense_targets
    from .models import adapter_for
    from .models.loading import SAM_MODEL_TYPE, load_model, saved_model_type

    device = provenance.resolve_device(a.device)
    model, _ = load_model(a.model_dir, a.dtype)
    model_type = saved_model_type(a.model_dir)
    adapter = adapter_for(model_type)
    inputs = load_cached(a.inputs, "calibration_images" if model_type == SAM_MODEL_TYPE else "calibration_tokens")
    started = time.perf_counter()
    hidden = dense_targets(model, adapter, inputs, a.batch_size, device)
    atomic_torch_save({"tokens": inputs, "last_hidden": hidden.contiguous()}, Path(a.out))
    _log(f"dense final features {tuple(hidden.shape)} in {time.perf_counter() - started:.1f}s")


def cmd_input_compensation(a: argparse.Namespace) -> None:
    from .stages import run_input_compensation

    device = provenance.resolve_device(a.device)
    run_input_compensation(a.in_dir, a.dense_outputs, json.loads(a.stage), json.loads(a.identity), a.out_dir,
                           a.progress, device, a.dtype, log=_log)


def cmd_calibration_images(a: argparse.Namespace) -> None:
    from .data.images import calibration_images
    from .models.loading import load_config

    image_size = load_config(a.model_dir).image_size
    images = calibration_images(json.loads(a.image_set), a.nsamples, a.seed, image_size)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    torch.save(images, a.out)
    _log(f"{images.shape[0]} calibration images preprocessed to {tuple(images.shape[1:])}")


def cmd_shape_images(a: argparse.Namespace) -> None:
    from .data.shapes import write_shape_set

    spec = json.loads(a.spec)
    tmp = Path(a.out_dir + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write_shape_set(tmp, spec.get("split", "eval"), int(spec.get("count", 16)), int(spec.get("seed", 0)),
                    int(spec.get("size", 256)), spec.get("format", "coco"))
    tmp.rename(a.out_dir)  # file names inside are relative: the set is valid wherever it lands
    _log(f"{spec.get('count', 16)} synthetic {spec.get('split', 'eval')} scenes ({spec.get('format', 'coco')}) -> {a.out_dir}")


def cmd_prune_step(a: argparse.Namespace) -> None:
    from .runs import RunSpec, prune_group

    spec = RunSpec.from_dict(json.loads(a.spec))
    device = provenance.resolve_device(a.device)
    age = provenance.process_age()
    _log(f"{spec.method} {spec.pattern} s={spec.sparsity} w{spec.wbits}: blocks {a.first}..{a.last - 1} on {device}"
         + (f" (process started {age:.1f}s ago)" if age is not None else ""))
    if torch.cuda.is_initialized():  # only where something ran before in this process (CUDA starts in prune_group)
        torch.cuda.reset_peak_memory_stats()
    prune_group(a.model_dir, spec, range(a.first, a.last), a.carry_in, a.blocks, a.record, a.carry_out,
                device=device, batch_size=a.batch_size, offload_streams=a.offload_streams, log=_log)
    age = provenance.process_age()
    if age is not None:
        records = json.loads(Path(a.record).read_text())
        _log(f"step done {age:.1f}s after the process started; engine time {sum(r['seconds'] for r in records):.1f}s")


def cmd_assemble(a: argparse.Namespace) -> None:
    from .checkpoint import assemble
    from .checks import verify_and_record
    from .records import pruning_record

    records = [r for path in a.records for r in json.loads(Path(path).read_text())]
    record = pruning_record(json.loads(a.spec), records, identity=json.loads(a.identity) if a.identity else None,
                            versions=provenance.versions())
    assemble(a.model_dir, a.blocks, a.out_dir, record)
    checks = verify_and_record(a.out_dir)
    _log(f"assembled {a.out_dir}: measured sparsity {record['measured_sparsity']:.4f}; checks {checks}")


def cmd_perplexity(a: argparse.Namespace) -> None:
    from .checkpoint import load_cached
    from .evaluate.perplexity import perplexity
    from .models.loading import load_model

    device = provenance.resolve_device(a.device)
    model, _ = load_model(a.model_dir, a.dtype)
    model.to(device)
    data = load_cached(a.tokens, "eval_tokens")
    windows = data["windows"]
    started = time.perf_counter()
    value = perplexity(model, windows, batch_size=a.batch_size, log=_log if a.verbose else None)
    meta = json.loads(a.meta)
    _write_json(a.out, {
        **meta, "metric": "perplexity", "value": value, "windows": int(windows.shape[0]),
        "seqlen": int(windows.shape[1]), "text_tokens": int(data["total_tokens"]),
        "seconds": time.perf_counter() - started, "versions": provenance.versions(),
        "machine": provenance.machine(device),
    })
    _log(f"{meta.get('run')} perplexity on {meta.get('corpus')}: {value:.3f}")


def cmd_zeroshot(a: argparse.Namespace) -> None:
    from .evaluate.zeroshot import evaluate_tasks

    device = provenance.resolve_device(a.device)
    settings = json.loads(a.settings)
    meta = json.loads(a.meta)
    result = evaluate_tasks(a.model_dir, settings, device, a.dtype, a.task_dir)
    _write_json(a.out, {**meta, **result, "versions": provenance.versions(), "machine": provenance.machine(device)})
    _log(f"{meta.get('run')} zero-shot mean accuracy {result['mean']:.4f}")


def cmd_inference_speed(a: argparse.Namespace) -> None:
    from .evaluate.inference import time_two_four

    meta, settings = json.loads(a.meta), json.loads(a.settings)
    device = "cuda" if a.device == "auto" and torch.cuda.is_available() else a.device
    result = time_two_four(a.dense_dir, a.model_dir, settings, device, log=_log)
    _write_json(a.out, {**meta, "metric": "inference", **result, "settings": settings,
                        "versions": provenance.versions(),
                        "machine": provenance.machine(device if result["measured"] else "cpu")})


def cmd_sam_iou(a: argparse.Namespace) -> None:
    from .evaluate.sam_iou import annotated_images, single_point_iou
    from .models.loading import load_model

    device = provenance.resolve_device(a.device)
    model, _ = load_model(a.model_dir, a.dtype)
    images = annotated_images(json.loads(a.image_set), seed=a.seed)
    result = single_point_iou(model, images, device, selection=a.selection, log=_log)
    meta = json.loads(a.meta)
    _write_json(a.out, {**meta, **result, "seed": a.seed, "versions": provenance.versions(),
                        "machine": provenance.machine(device)})
    _log(f"{meta.get('run')} single-point IoU on {meta.get('dataset')}: {result['value']:.4f} ({result['instances']} instances)")


def cmd_zeroshot_tasks(a: argparse.Namespace) -> None:
    from .data.wiki_tasks import write_local_tasks

    write_local_tasks(a.out_dir, json.loads(a.settings))
    _log(f"local zero-shot tasks written to {a.out_dir}")


def cmd_collect(a: argparse.Namespace) -> None:
    from .report.tables import collect_results

    frame = collect_results(a.evals)
    Path(a.csv).parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(a.csv, index=False)
    _log(f"{len(frame)} results -> {a.csv}")


def cmd_plots(a: argparse.Namespace) -> None:
    import pandas as pd

    from .report.plots import draw_all

    config = _config_arg(a.config) if a.config else None
    paths = draw_all(pd.read_csv(a.csv), a.records, a.out_dir, config)
    _log(f"{len(paths)} plot files in {a.out_dir}")


def _config_arg(text: str) -> dict:
    """A config given inline as JSON, or as the path of a YAML file."""
    import yaml

    if text.lstrip().startswith("{"):
        return json.loads(text)
    return yaml.safe_load(Path(text).read_text())


def cmd_tables(a: argparse.Namespace) -> None:
    import pandas as pd

    from .report.tables import render_tables

    Path(a.md).write_text(render_tables(pd.read_csv(a.csv), _config_arg(a.config), plots=a.plots))
    _log(f"tables -> {a.md}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="icp", description=__doc__)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("export-dense", help="save a model source as a plain safetensors checkpoint")
    p.add_argument("--source", required=True)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--variant", default=None, help="SAM only: vit_b | vit_l | vit_h (default: from the file name)")
    p.add_argument("--arch", default=None, help="SAM only: JSON of encoder fields overriding the variant's")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_export_dense)

    p = sub.add_parser("calibration", help="seeded calibration windows")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--corpus", required=True, help="corpus spec as JSON")
    p.add_argument("--nsamples", type=int, required=True)
    p.add_argument("--seqlen", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sampler", default="stream")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_calibration)

    p = sub.add_parser("calibration-images", help="seeded, SAM-preprocessed calibration images")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--image-set", required=True, help="image set spec as JSON")
    p.add_argument("--nsamples", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_calibration_images)

    p = sub.add_parser("eval-tokens", help="consecutive evaluation windows")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--corpus", required=True)
    p.add_argument("--seqlen", type=int, required=True)
    p.add_argument("--max-windows", type=int, default=None)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_eval_tokens)

    p = sub.add_parser("activations", help="dense inputs of block 0 on the calibration windows")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--tokens", required=True)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_activations)

    p = sub.add_parser("dense-outputs", help="the dense model's last hidden states (SAM: image embeddings) on the calibration inputs (IC's targets)")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--inputs", "--tokens", required=True, help="calibration windows (or SAM's calibration images)")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_dense_outputs)

    p = sub.add_parser("input-compensation", help="the IC stage: train the input pool of a pruned model, fold it in")
    p.add_argument("--in-dir", required=True, help="the pruned run's model directory")
    p.add_argument("--dense-outputs", required=True, help="file written by dense-outputs")
    p.add_argument("--stage", required=True, help="the stage as JSON (name, settings, calibration, input_run)")
    p.add_argument("--identity", required=True, help="the staged run's id block as JSON")
    p.add_argument("--progress", required=True, help="per-epoch progress file (resumed from)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_input_compensation)

    p = sub.add_parser("prune-step", help="prune (and, for ICP, compensate) a group of blocks")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--spec", required=True, help="RunSpec as JSON")
    p.add_argument("--first", type=int, required=True)
    p.add_argument("--last", type=int, required=True, help="one past the last block")
    p.add_argument("--carry-in", required=True)
    p.add_argument("--blocks", required=True, help="output directory: one file per finished block")
    p.add_argument("--record", required=True)
    p.add_argument("--carry-out", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--offload-streams", action="store_true", help="keep hidden-state streams in host memory")
    p.set_defaults(func=cmd_prune_step)

    p = sub.add_parser("assemble", help="dense checkpoint + pruned blocks -> pruned checkpoint")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--spec", required=True)
    p.add_argument("--identity", default=None, help="the run's id block as JSON")
    p.add_argument("--blocks", nargs="+", required=True, help="the steps' block directories")
    p.add_argument("--records", nargs="+", required=True)
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=cmd_assemble)

    p = sub.add_parser("perplexity", help="perplexity of a saved model on cached windows")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--tokens", required=True)
    p.add_argument("--meta", default="{}")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_perplexity)

    p = sub.add_parser("sam-iou", help="single-point IoU of a saved SAM on an annotated image set")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--image-set", required=True, help="image set spec as JSON")
    p.add_argument("--selection", default="best_score")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--meta", default="{}")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_sam_iou)

    p = sub.add_parser("inference-speed", help="2:4 model with semi-structured sparse kernels vs dense, on one GPU")
    p.add_argument("--dense-dir", required=True)
    p.add_argument("--model-dir", required=True, help="the 2:4-pruned model")
    p.add_argument("--settings", default="{}", help="JSON: prefill_tokens, decode_batch, decode_steps, repeats, dtype")
    p.add_argument("--meta", default="{}")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True)
    p.add_argument("--gpu-slots", type=int, default=1,
                   help="job slots of its GPU this job holds (timings: all of them, the GPU to itself)")
    p.set_defaults(func=cmd_inference_speed)

    p = sub.add_parser("shape-images", help="write a synthetic shapes image set (icp.data.shapes)")
    p.add_argument("--spec", required=True, help="the image set entry as JSON (split, count, size, format, seed)")
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=cmd_shape_images)

    p = sub.add_parser("zeroshot-tasks", help="write the local zero-shot task files")
    p.add_argument("--settings", required=True)
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=cmd_zeroshot_tasks)

    p = sub.add_parser("zeroshot", help="lm-eval zero-shot accuracy of a saved model")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--settings", required=True)
    p.add_argument("--task-dir", default=None)
    p.add_argument("--meta", default="{}")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_zeroshot)

    p = sub.add_parser("collect", help="results.csv from every evaluation JSON")
    p.add_argument("--evals", nargs="*", default=[])
    p.add_argument("--csv", required=True)
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("plots", help="figures from results.csv and the runs' records")
    p.add_argument("--csv", required=True)
    p.add_argument("--records", nargs="*", default=[])
    p.add_argument("--out-dir", required=True)
    p.add_argument("--config", default=None, help="the config (JSON or a YAML file): draws its ablation sweeps")
    p.set_defaults(func=cmd_plots)

    p = sub.add_parser("tables", help="tables.md from results.csv")
    p.add_argument("--config", required=True, help="the config as JSON, or a YAML file")
    p.add_argument("--csv", required=True)
    p.add_argument("--plots", nargs="*", default=[], help="plot files to link")
    p.add_argument("--md", required=True)
    p.set_defaults(func=cmd_tables)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "device", None):
        # before anything touches CUDA: on a multi-GPU host each job takes a GPU of its own
        from .gpu_slots import limit_shared_gpu_memory, pin_job_to_one_gpu

        slots = getattr(args, "gpu_slots", 1)
        pin_job_to_one_gpu(args.device, slots=slots, log=_log)
        limit_shared_gpu_memory(args.device, slots=slots, log=_log)
    # Snakemake sets OMP_NUM_THREADS to the job's thread count (1 under --cores 1); the workflow
    # hands over its own choice (config cpu_threads) in ICP_TORCH_THREADS
    threads = args.threads or int(os.environ.get("ICP_TORCH_THREADS") or 0)
    if threads:
        torch.set_num_threads(threads)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

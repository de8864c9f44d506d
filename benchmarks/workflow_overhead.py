"""What the workflow adds to the pruning engine's own time.

One ICP run (alpha 0.8, beta 0.9, one epoch, 50 %) on a randomly initialised OPT-6.7B-shaped
checkpoint (a local directory as the model source; weights do not change the cost) with 128 x 2048
calibration tokens, pruned through Snakemake with config/paper.yaml's engine settings (one job per
run, streams offloaded to host memory), against the time the engine itself reports for the same
blocks (the sum of the per-block times in the step's record). The difference is the job's tax:
process start, reading the block-0 inputs, writing the pruned blocks, Snakemake's own work.

The job's log gives the tax's parts: the process's age at its first log line (start-up: the
interpreter, the CLI's imports, the GPU count), the time until block 0 can start (streams read while
the model code imports), the wait for the last block's file after the last block, and the time from
the step's end to the job's (interpreter exit, Snakemake). `--code DIR` runs another checkout of
the pipeline (its Snakefile and package) on the same work directory, e.g. the previous commit as a
baseline; `--label` names the row in the JSON, which keeps the rows of earlier labels.

    python benchmarks/workflow_overhead.py --work /tmp/overhead --out benchmarks/results --tag h100
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import re
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

WORDS = ("the of and a to in is was for on as with by he at from his an were are which this be or had not "
         "river city king house music war school water church team year film game album song station "
         "village series party island player battle county family language bridge museum").split()


def write_random_opt(model_dir: Path, text: str, layers: int, smoke: bool = False) -> None:
    """An OPT-6.7B-shaped fp16 checkpoint with random weights and a small byte-level BPE tokenizer
    (`smoke`: a tiny one on the CPU, to check this script)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders
    from transformers import OPTConfig, OPTForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([text], trainers.BpeTrainer(vocab_size=2000, special_tokens=["</s>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", bos_token="</s>")
    width = 64 if smoke else 4096
    config = OPTConfig(hidden_size=width, ffn_dim=4 * width, num_hidden_layers=layers, num_attention_heads=width // 128 or 1,
                       max_position_embeddings=2048, word_embed_proj_dim=width, vocab_size=50272, dtype="float16")
    torch.manual_seed(0)
    with torch.device("cpu" if smoke else "cuda"):
        model = OPTForCausalLM(config).half()
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", default="/tmp/icp-overhead")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--tag", default="gpu")
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--code", default=str(REPO), help="the pipeline checkout to run (Snakefile + icp package)")
    parser.add_argument("--label", default="this commit")
    parser.add_argument("--blocks-per-step", default=None,
                        help="override config/paper.yaml's engine.blocks_per_step (e.g. 1: one job per block)")
    parser.add_argument("--smoke", action="store_true", help="a tiny model on the CPU: checks this script, times nothing")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    text_file = work / "text.txt"
    if not text_file.exists():
        text_file.write_text("\n\n".join(" ".join(rng.choice(WORDS) for _ in range(300)) + "." for _ in range(3000)))
    model_dir = work / "opt-6.7b-random"
    started = time.perf_counter()
    if not (model_dir / "config.json").exists():
        write_random_opt(model_dir, text_file.read_text(), args.layers, args.smoke)
    print(f"random checkpoint ready in {time.perf_counter() - started:.0f} s", flush=True)

    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    engine = dict(paper["engine"])
    if args.blocks_per_step is not None:
        engine["blocks_per_step"] = "all" if args.blocks_per_step == "all" else int(args.blocks_per_step)
    config = {
        "device": "cpu" if args.smoke else "cuda",
        "models": {"opt-6.7b-random": {"source": str(model_dir), "dtype": "float32" if args.smoke else "float16",
                                       "label": "OPT-6.7B (random)"}},
        "corpora": {"text": {"source": "files", "paths": [str(text_file)], "label": "Text"}},
        "calibration": {"corpus": "text", "nsamples": 4 if args.smoke else 128, "seqlen": 128 if args.smoke else 2048,
                        "seed": 0, "sampler": "stream"},
        "engine": engine,
        "methods": {"icp": paper["methods"]["icp"]},
        "perplexity": {"seqlen": 2048, "max_windows": 4},
        "zeroshot": {"offline": True, "tasks": {"unused": {"metric": "acc"}}},  # required; no table asks for it
        "tables": {"table1": {"models": ["opt-6.7b-random"], "methods": ["icp"], "sparsities": [0.5], "corpora": ["text"]}},
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    from icp.experiments import all_experiments
    from icp.layout import block_groups

    run = next(run for (model, run), exp in all_experiments(config).items() if exp.spec is not None)
    groups = range(len(block_groups(args.layers, engine["blocks_per_step"])))
    steps = f"results/opt-6.7b-random/runs/{run}/steps"
    targets = [f"{steps}/{g:03d}.json" for g in groups]
    code = Path(args.code).resolve()
    shutil.rmtree(work / f"results/opt-6.7b-random/runs/{run}", ignore_errors=True)  # the steps run afresh
    cmd = [sys.executable, "-m", "snakemake", *targets, "-s", str(code / "Snakefile"), "-d", str(work), "--profile",
           str(code / "profiles" / "gpu"), "--resources", "gpu=1", "--configfile", str(work / "config.yaml")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(code), *filter(None, [os.environ.get("PYTHONPATH")])])}
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    print(done.stdout[-3000:], done.stderr[-3000:], flush=True)
    done.check_returncode()
    wall_s = time.perf_counter() - started
    print(f"snakemake done in {wall_s:.0f} s", flush=True)

    records, job_s, parts, logs = [], 0.0, [], []
    for g, target in zip(groups, targets):
        step_records = json.loads((work / target).read_text())
        with open(work / f"results/opt-6.7b-random/benchmarks/runs/{run}/step-{g:03d}.tsv") as f:
            step_s = float(next(csv.DictReader(f, delimiter="\t"))["s"])
        log = (work / f"results/opt-6.7b-random/logs/runs/{run}/step-{g:03d}.log").read_text()
        records += step_records
        job_s += step_s
        parts.append(breakdown(log, step_s, sum(r["seconds"] for r in step_records)))
        logs.append(log)
    engine_s = sum(r["seconds"] for r in records)
    total = None if None in parts else {key: sum(part[key] for part in parts) for key in parts[0]}
    row = {"label": args.label, "run": run, "blocks": len(records), "jobs": len(targets), "engine_s": engine_s,
           "job_s": job_s, "ratio": job_s / engine_s, "snakemake_wall_s": wall_s,
           "peak_gpu_gib": records[0].get("peak_gpu_gib"),
           "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None, "engine": engine,
           "breakdown": total, "log_head": logs[0].splitlines()[:4], "log_tail": logs[-1].splitlines()[-4:]}
    print(json.dumps(row, indent=1), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    file = out / f"workflow_overhead_{args.tag}.json"
    rows = json.loads(file.read_text()) if file.exists() else {}
    rows = rows if "label" not in rows and "run" not in rows else {}  # a file of the older one-row form is replaced
    rows[args.label] = row
    file.write_text(json.dumps(rows, indent=1))


def breakdown(log: str, job_s: float, engine_s: float) -> dict[str, float] | None:
    """The tax's parts from a step's log (None for a log without the timing lines)."""
    def number(pattern: str) -> float | None:
        found = re.search(pattern, log)
        return float(found.group(1)) if found else None

    start = number(r"process started ([\d.]+)s ago")
    ready = number(r"code imported in ([\d.]+)s")
    last_file = number(r"on disk ([\d.]+)s after the last one")
    done = number(r"step done ([\d.]+)s after the process started")
    carry = number(r"written in ([\d.]+)s \(") or 0.0  # the window state for the next job, if any
    if None in (start, ready, last_file, done):
        return None
    return {"start_to_first_log_s": start, "streams_and_model_code_s": ready, "engine_s": engine_s,
            "last_block_file_s": last_file, "carry_write_s": carry,
            "other_in_process_s": done - start - ready - engine_s - last_file - carry,
            "exit_and_snakemake_s": job_s - done}


if __name__ == "__main__":
    main()

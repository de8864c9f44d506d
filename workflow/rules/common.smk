# Config -> experiments, output paths and parameter hashes (the logic lives in icp.experiments).
import json
import os
import shlex

from icp import experiments as X
from icp.runs import block_groups
from snakemake.exceptions import WorkflowError

# with the ablations' alpha/beta pairs checked against the model's real layer shapes, where known
X.check_config(config, shapes_for=lambda model: X.model_layer_shapes(config, model))
EXPERIMENTS = X.all_experiments(config)
DEVICE = config.get("device", "auto")


def torch_threads():
    """CPU threads for each job's torch: `cpu_threads` from the config or, with `auto`, the
    machine's cores shared among the --cores job slots (so the main command's --cores 1 runs one
    job at a time on the whole machine, not on the single thread Snakemake would otherwise give it)."""
    wanted = config.get("cpu_threads", "auto")
    if wanted != "auto":
        return int(wanted)
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        slots = max(1, int(workflow.cores or 1))
    except WorkflowError:  # cluster executors leave the total undefined: every job has its own allocation
        slots = 1
    return max(1, available // slots)


# Handed to the jobs through the environment: a rerun trigger would fire on a params change when
# the same workflow later runs with other --cores, but never on the environment.
JOBS_PER_GPU = int(config.get("jobs_per_gpu", 1))  # GPU job slots per GPU (icp/gpu_slots.py)
os.environ.update(ICP_TORCH_THREADS=str(torch_threads()), ICP_JOBS_PER_GPU=str(JOBS_PER_GPU))
ICP_CLI = f"{sys.executable} -m icp.cli"


wildcard_constraints:
    model=r"[A-Za-z0-9][A-Za-z0-9_.\-]*",
    run=r"[A-Za-z0-9_.\-]+",
    corpus=r"[A-Za-z0-9][A-Za-z0-9_.\-]*",
    dataset=r"[A-Za-z0-9][A-Za-z0-9_.\-]*",
    group=r"\d{3}",
    key=r"[0-9a-f]{8}",


def uses_gpu():
    """Whether GPU-capable rules ask the scheduler for a GPU (resources gpu=1): always with
    `device: cuda…`; with `auto`, only when the machine that plans the workflow sees one, so the
    CPU-sized default sent to a CPU-only cluster asks for none (a cluster whose submit host has no
    GPU but whose nodes do: set `device: cuda`)."""
    if DEVICE.startswith("cuda"):
        return True
    if DEVICE == "auto":
        import torch

        return torch.cuda.is_available()
    return False


def experiment(wc):
    try:
        return EXPERIMENTS[(wc.model, wc.run)]
    except KeyError:
        raise ValueError(f"no experiment {wc.run!r} for model {wc.model!r} in this config") from None


def dense_dir(model):
    return f"results/{model}/dense"


def num_blocks(model):
    """Blocks of a model, read from its exported dense config (a Snakemake checkpoint)."""
    out = checkpoints.export_dense.get(model=model).output.config
    return json.loads(open(out).read())["num_hidden_layers"]


def step_groups(model):
    return block_groups(num_blocks(model), config["engine"]["blocks_per_step"])


def model_dir(model, run):
    return dense_dir(model) if run == "dense" else f"results/{model}/runs/{run}/model"


def model_weights(wc):
    return f"{model_dir(wc.model, wc.run)}/model.safetensors"


def run_meta(wc, **extra):
    exp = experiment(wc) if wc.run != "dense" else None
    spec = exp.spec_data if exp else {}
    return json.dumps({
        "model": wc.model, "run": wc.run,
        "method": spec.get("method", "dense"),
        "pattern": spec.get("pattern", "dense"),
        "sparsity": spec.get("sparsity") if spec.get("pattern") == "unstructured" else None,
        "wbits": spec.get("wbits", 16),
        "run_hash": wc.run.rsplit("-", 1)[-1] if exp else None,
        **extra,
    })


def carry_in(wc):
    group = int(wc.group)
    if group == 0:
        return f"results/{wc.model}/activations/calib-{experiment(wc).calibration}.pt"
    return f"results/{wc.model}/runs/{wc.run}/steps/{group - 1:03d}.carry.pt"


def step_files(wc, kind):
    return [f"results/{wc.model}/runs/{wc.run}/steps/{g:03d}.{kind}" for g in range(len(step_groups(wc.model)))]


def sam_export_args(model):
    cfg = config["models"][model]
    args = []
    if cfg.get("variant"):
        args.append(f"--variant {cfg['variant']}")
    if cfg.get("arch"):
        args.append(f"--arch {shlex.quote(json.dumps(cfg['arch']))}")
    return " ".join(args)


def local_task_dir():
    return f"results/zeroshot_tasks/{X.zeroshot_key(config)}"


def image_set_inputs(name):
    """A synthetic image set's folder (written by rule shape_images); nothing for sets on disk."""
    directory = X.shapes_dir(config, name)
    return [directory] if directory else []


def shape_set_spec(key):
    for name in config.get("image_sets") or {}:
        if X.shapes_dir(config, name) == f"results/shapes/{key}":
            return config["image_sets"][name]
    raise ValueError(f"no shapes image set has the key {key!r}")

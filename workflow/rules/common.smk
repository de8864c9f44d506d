# Config -> experiments, output paths and parameter hashes (the logic lives in icp.experiments).
import json
import os
import shlex

from icp import experiments as X
from icp import layout as L
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

# How the jobs run, not what they compute: kept out of the report rules' params (the whole config
# goes there as JSON), so that changing one re-renders no plot or table
EXECUTION_KEYS = ("device", "cpu_threads", "jobs_per_gpu", "keep_models")
REPORT_CONFIG = json.dumps({key: value for key, value in config.items() if key not in EXECUTION_KEYS})


def run_weights(pattern: str):
    """A run's weights file as a rule output: kept, or with `keep_models: false` a temp() file that
    Snakemake deletes once nothing left to run reads it (its record and evaluations stay)."""
    return pattern if config.get("keep_models", True) else temp(pattern)


def start_forkserver():
    """A local run keeps one preloaded process that starts every job by forking (icp/forkserver.py):
    each job is spared importing torch, transformers and segment-anything anew. Not on a cluster executor
    (its jobs run elsewhere), nor with ICP_FORKSERVER=off; a job that finds no server runs as usual."""
    import subprocess
    import tempfile

    if not workflow.is_main_process or not workflow.local_exec or os.environ.get("ICP_FORKSERVER") == "off":
        return None
    path = os.path.join(tempfile.gettempdir(), f"icp-fork-{os.getpid()}.sock")
    log_path = L.global_log("forkserver")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "icp.forkserver", "--socket", path, "--parent", str(os.getpid())],
                                  stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    os.environ["ICP_FORKSERVER"] = path
    return server


def stop_forkserver(server):
    if server is not None and server.poll() is None:
        server.terminate()


wildcard_constraints:
    model=r"[A-Za-z0-9][A-Za-z0-9_.\-]*",
    run=L.RUN_WITH_STAGES,
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
        if wc.run == L.DENSE and wc.model in config["models"]:
            return X.Experiment(wc.model, L.DENSE, None)
        raise ValueError(f"no experiment {wc.run!r} for model {wc.model!r} in this config") from None


def dense_dir(model):
    return L.path("dense_dir", model=model)


def num_blocks(model):
    """Blocks of a model as its adapter counts them: the export's layer shapes hold one entry per
    block (torch-free to read; a Snakemake checkpoint, so read once the export exists)."""
    out = checkpoints.export_dense.get(model=model).output.config
    shapes = os.path.join(os.path.dirname(out), X.SHAPES_FILE)
    if os.path.isfile(shapes):
        return len(json.loads(open(shapes).read()))
    return json.loads(open(out).read())["num_hidden_layers"]  # a tree exported before the shapes file


def step_groups(model):
    return L.block_groups(num_blocks(model), config["engine"]["blocks_per_step"])


def model_dir(model, run):
    return L.model_dir(model, run)


def model_weights(wc):
    return L.path("dense_weights", model=wc.model) if wc.run == L.DENSE else L.path("run_weights", model=wc.model, run=wc.run)


def run_meta(wc, **extra):
    """The `id` block of an evaluation's JSON (and of its results.csv rows), with what it evaluated."""
    return json.dumps({**experiment(wc).identity(), **extra})


def carry_in(wc):
    group = int(wc.group)
    if group == 0:
        return L.path("block0_inputs", model=wc.model, key=experiment(wc).calibration)
    return L.path("step_carry", model=wc.model, run=wc.run, group=f"{group - 1:03d}")


def step_files(wc, kind):
    name = {"blocks": "step_blocks", "json": "step_record"}[kind]
    return [L.path(name, model=wc.model, run=wc.run, group=f"{g:03d}") for g in range(len(step_groups(wc.model)))]


def sam_export_args(model):
    cfg = config["models"][model]
    args = []
    if cfg.get("variant"):
        args.append(f"--variant {cfg['variant']}")
    if cfg.get("arch"):
        args.append(f"--arch {shlex.quote(json.dumps(cfg['arch']))}")
    return " ".join(args)


def local_task_dir():
    return L.path("zeroshot_tasks", key=X.zeroshot_key(config))


def image_set_inputs(name):
    """A synthetic image set's folder (written by rule shape_images); nothing for sets on disk."""
    directory = X.shapes_dir(config, name)
    return [directory] if directory else []


def shape_set_spec(key):
    for name in config.get("image_sets") or {}:
        if X.shapes_dir(config, name) == L.path("shape_images", key=key):
            return config["image_sets"][name]
    raise ValueError(f"no shapes image set has the key {key!r}")

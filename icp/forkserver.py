"""A preloaded process that starts the workflow's jobs by forking: local runs only.

Each job of a local run would otherwise start Python and import torch, transformers and
segment-anything afresh: 3 to 10 s of a 2-core machine per job, for some 140 jobs in the embedded
default. The server imports them once (`PRELOAD`); for every job it forks a child that takes the job's
arguments, working directory, environment and standard streams, runs `icp.cli.main` and exits
with its status. Nothing is computed in the server itself (no CUDA, no OpenMP pool, one thread),
so each child starts as a fresh process would after its imports; what a job computes does not
depend on how it was started (a test runs the same job both ways and compares the files).

The jobs' commands do not change: `python -m icp.cli ...` hands itself over (`run_via_server`,
before it imports torch) where `ICP_FORKSERVER` names a live server, and otherwise runs as it
always did, so a dead or absent server only costs the start-up it saves. Protocol, one Unix
socket connection per job: the client sends one JSON line {argv, cwd, env} with its stdin,
stdout and stderr attached (SCM_RIGHTS); the server answers "pid <n>" once the job runs and
"exit <status>" when it ends; the client passes SIGTERM/SIGINT (Snakemake cancelling) to the job.

    python -m icp.forkserver --socket /tmp/icp-fork.sock --parent <pid>   # workflow/rules/common.smk
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import socket
import sys
import time

# What the jobs import; anything else a job needs it imports itself, as it would anyway. Not
# lm-eval nor `datasets` (about 1 s): `datasets` reads HF_DATASETS_OFFLINE once, at import, and
# the zero-shot job sets it (offline configs) just before importing them.
PRELOAD = (
    "torch", "safetensors.torch", "numpy", "transformers", "transformers.models.llama.modeling_llama",
    "transformers.models.opt.modeling_opt", "segment_anything", "pandas", "icp.cli", "icp.engine", "icp.runs", "icp.methods",
    "icp.methods.input_compensation", "icp.models.loading", "icp.models.llama", "icp.evaluate.perplexity",
    "icp.evaluate.zeroshot", "icp.evaluate.sam_iou", "icp.data.corpora", "icp.data.tokens",
)
MAX_REQUEST = 1 << 20


def preload(names: tuple[str, ...] = PRELOAD) -> list[str]:
    """Import what the jobs import; a module that is not installed is skipped. Returns the loaded."""
    loaded = []
    for name in names:
        try:
            importlib.import_module(name)
            loaded.append(name)
        except Exception:  # noqa: BLE001 - an optional package (segment-anything, lm-eval) may be absent
            pass
    return loaded


def _read_request(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(conn, MAX_REQUEST, 3)
    while not data.endswith(b"\n"):
        more = conn.recv(MAX_REQUEST)
        if not more:
            raise ConnectionError("client went away before its request was complete")
        data += more
    return json.loads(data), fds


def _run_job(request: dict, fds: list[int]) -> None:
    """In the forked job process: become the job, run it, never return."""
    status = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["icp.cli", *request["argv"]]
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from icp.cli import main

        status = main(request["argv"]) or 0
    except SystemExit as done:  # argparse errors, explicit exits
        status = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:  # noqa: BLE001 - the job's traceback goes to its own log, as without the server
        import traceback

        traceback.print_exc()
        status = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(status)


def _supervise(conn: socket.socket, request: dict, fds: list[int]) -> None:
    """In the forked supervisor: fork the job, tell the client its pid and, at the end, its status."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    job = os.fork()
    if job == 0:
        conn.close()
        _run_job(request, fds)
    for fd in fds:
        os.close(fd)
    try:
        conn.sendall(f"pid {job}\n".encode())
    except OSError:
        pass
    _, raw = os.waitpid(job, 0)
    status = os.waitstatus_to_exitcode(raw)  # negative: killed by that signal
    try:
        conn.sendall(f"exit {status}\n".encode())
    except OSError:
        pass
    os._exit(0)


def serve(path: str, parent: int | None = None) -> None:
    """Accept jobs on the Unix socket `path` until `parent` (the Snakemake process) is gone."""
    started = time.perf_counter()
    loaded = preload()
    print(f"preloaded {len(loaded)}/{len(PRELOAD)} modules in {time.perf_counter() - started:.1f}s; "
          f"not importable: {sorted(set(PRELOAD) - set(loaded)) or 'none'}", flush=True)
    import torch

    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(16)
    server.settimeout(1.0)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, _exit_on_signal)  # terminate(): leave through `finally`, socket removed
    try:
        while parent is None or _alive(parent):
            try:
                conn, _ = server.accept()
            except socket.timeout:
                _reap()
                continue
            _reap()
            conn.settimeout(None)
            try:
                request, fds = _read_request(conn)
            except (OSError, ValueError, ConnectionError):
                conn.close()
                continue
            if len(fds) != 3 or torch.cuda.is_initialized():  # a child must start clean: refuse, the client runs it
                for fd in fds:
                    os.close(fd)
                conn.close()
                continue
            if os.fork() == 0:
                server.close()
                _supervise(conn, request, fds)
            for fd in fds:
                os.close(fd)
            conn.close()
    finally:
        server.close()
        if os.path.exists(path):
            os.unlink(path)


def _exit_on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _reap() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def run_via_server(argv: list[str], path: str | None = None) -> int | None:
    """Client side: run the job `icp.cli argv` in the server at `path` (default: $ICP_FORKSERVER)
    and return its exit status; None where no server took it (nothing ran: run it here)."""
    path = path or os.environ.get("ICP_FORKSERVER")
    if not path or not os.path.exists(path):
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode() + b"\n"
        socket.send_fds(conn, [request], [0, 1, 2])
        reader = conn.makefile("r")
        first = reader.readline()
    except OSError:
        conn.close()
        return None
    if not first.startswith("pid "):
        conn.close()
        return None  # refused before it started
    job = int(first.split()[1])

    def forward(signum, _frame):
        try:
            os.kill(job, signum)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    last = reader.readline()
    conn.close()
    if not last.startswith("exit "):
        return 1  # the supervisor went away mid-job: a failure, which Snakemake reruns
    status = int(last.split()[1])
    return 128 - status if status < 0 else status  # killed by signal n: 128 + n, as a shell says


def wait_until_ready(path: str, timeout: float = 120.0) -> bool:
    """True once the server at `path` accepts connections (it binds after its imports)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
                return True
            except OSError:
                pass
            finally:
                probe.close()
        time.sleep(0.2)
    return False


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="preloaded fork server for the workflow's local jobs")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--parent", type=int, default=None, help="exit when this process is gone")
    args = parser.parse_args()
    serve(args.socket, args.parent)

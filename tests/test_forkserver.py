"""The preloaded fork server: a job started through it writes what the same job writes alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from icp.forkserver import run_via_server, wait_until_ready

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("fork") / "s.sock")
    proc = subprocess.Popen([sys.executable, "-m", "icp.forkserver", "--socket", path, "--parent", str(os.getpid())],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_until_ready(path, timeout=180)
    yield path
    proc.terminate()
    proc.wait(timeout=30)
    assert not os.path.exists(path)  # it cleans up after itself


def cli(args: list[str], log: Path, forkserver: str | None) -> int:
    env = {k: v for k, v in os.environ.items() if k != "ICP_FORKSERVER"}
    if forkserver:
        env["ICP_FORKSERVER"] = forkserver
    with open(log, "w") as out:
        return subprocess.run([sys.executable, "-m", "icp.cli", *args], cwd=ROOT, env=env, stdout=out,
                              stderr=subprocess.STDOUT).returncode


def test_a_forked_job_writes_the_same_files_and_log(server, tmp_path):
    from safetensors.torch import load_file

    from tiny_sam import TINY_SAM_ARCH, write_tiny_sam

    checkpoint = write_tiny_sam(tmp_path / "sam_vit_b_tiny.pth")
    args = ["export-dense", "--source", str(checkpoint), "--arch", json.dumps(TINY_SAM_ARCH)]
    assert cli([*args, "--out", str(tmp_path / "forked")], tmp_path / "forked.log", server) == 0
    assert cli([*args, "--out", str(tmp_path / "plain")], tmp_path / "plain.log", None) == 0
    forked, plain = load_file(str(tmp_path / "forked" / "model.safetensors")), load_file(str(tmp_path / "plain" / "model.safetensors"))
    assert forked.keys() == plain.keys() and all(forked[k].equal(plain[k]) for k in plain)
    assert (tmp_path / "forked" / "config.json").read_text() == (tmp_path / "plain" / "config.json").read_text()
    # the job's output reached its own log, with the working directory and environment of the client
    logged = [(tmp_path / f"{name}.log").read_text().split("] ", 1)[1].replace(f"/{name}\n", "/OUT\n") for name in ("forked", "plain")]
    assert logged[0] == logged[1] and "dense checkpoint" in logged[0]


def test_the_client_gets_the_jobs_status_and_the_server_takes_it(server, tmp_path):
    bad = ["shape-images", "--spec", "{}"]  # --out-dir missing: argparse exits 2
    assert cli(bad, tmp_path / "bad.log", server) == 2
    assert "the following arguments are required: --out-dir" in (tmp_path / "bad.log").read_text()
    spec = json.dumps({"split": "eval", "count": 2, "size": 64, "format": "coco"})
    status = run_via_server(["shape-images", "--spec", spec, "--out-dir", str(tmp_path / "scenes")], server)
    assert status == 0 and (tmp_path / "scenes").is_dir()  # not None: the server ran it
    assert run_via_server(["--help"], str(tmp_path / "no-such.sock")) is None  # no server: run it yourself


def test_cancelling_the_client_stops_the_job(server, tmp_path):
    script = tmp_path / "slow.json"
    script.write_text(json.dumps({"split": "eval", "count": 4000, "size": 256, "format": "coco"}))
    env = {**os.environ, "ICP_FORKSERVER": server}
    client = subprocess.Popen([sys.executable, "-m", "icp.cli", "shape-images", "--spec", script.read_text(),
                               "--out-dir", str(tmp_path / "many")], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(3)
    client.send_signal(signal.SIGTERM)
    assert client.wait(timeout=30) == 128 + signal.SIGTERM  # the job was killed by the signal passed on
    assert not (tmp_path / "many").exists()  # the set is renamed into place only when complete

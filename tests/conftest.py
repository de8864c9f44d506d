import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))

from tiny import generated_text, write_tiny_model  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """Saved tiny random checkpoints: {'llama': dir, 'opt': dir}."""
    root = tmp_path_factory.mktemp("models")
    return {family: write_tiny_model(root / family, family) for family in ("llama", "opt")}


@pytest.fixture(scope="session")
def text():
    return generated_text()


@pytest.fixture(params=["llama", "opt"])
def family(request):
    return request.param

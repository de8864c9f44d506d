"""The shared-context scorer against lm-eval's own HFLM: the same log-likelihoods, greedy flags and accuracy."""

import random

import pytest
import torch
from lm_eval.models.huggingface import HFLM

from icp.evaluate.shared_context import SharedContextLM
from icp.evaluate.zeroshot import evaluate_tasks
from icp.models.loading import load_model
from test_zeroshot import write_task
from tiny import WORDS, tiny_family_config, write_tokenizer


def requests_for(lm: HFLM, seed: int = 0) -> list:
    """Multiple-choice requests with contexts of different lengths (left padding in a batch), choices
    of one to six words (one-token choices included), and two items whose context no other shares."""
    rng = random.Random(seed)
    requests = []
    for item in range(14):
        context = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 14)))
        n_choices = 1 if item in (3, 9) else rng.choice([2, 4])
        for _ in range(n_choices):
            choice = " " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))
            context_enc, continuation_enc = lm._encode_pair(context, choice)
            requests.append(((context, choice), context_enc, continuation_enc))
    rng.shuffle(requests)  # answers must come back in the requests' order
    return requests


def compare(model, tokenizer, batch_size: int = 5):
    plain = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device="cpu")
    shared = SharedContextLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device="cpu")
    shared.items_per_batch, shared.choices_per_batch = 4, 3  # several batches of each kind
    requests = requests_for(plain)
    expected = plain._loglikelihood_tokens(requests, disable_tqdm=True)
    got = shared._loglikelihood_tokens(requests, disable_tqdm=True)
    assert len(got) == len(expected) == len(requests)
    for (ll, greedy), (ll_ref, greedy_ref) in zip(got, expected, strict=True):
        assert ll == pytest.approx(ll_ref, abs=1e-4)
        assert greedy == greedy_ref
    return got, expected


@pytest.mark.parametrize("name", ["llama", "opt"])
def test_shared_context_equals_lm_eval(tiny_dirs, name):
    model, tokenizer = load_model(str(tiny_dirs[name]))
    got, _ = compare(model, tokenizer)
    assert len({round(ll, 3) for ll, _ in got}) > len(got) // 2  # distinct scores: the check has teeth


def test_shared_context_on_a_sliding_window_family(tmp_path):
    """Gemma-3: sliding and global layers, contexts longer than the 8-token window."""
    from transformers import AutoModelForCausalLM

    tokenizer = write_tokenizer(tmp_path)
    torch.manual_seed(0)
    config = tiny_family_config("gemma3_text", len(tokenizer))
    config._attn_implementation = "sdpa"
    model = AutoModelForCausalLM.from_config(config).eval()
    compare(model, tokenizer)


def test_wrong_positions_are_caught(tiny_dirs, monkeypatch):
    """A scorer that drops the context's padding offset gives other log-likelihoods: the comparison fails."""
    model, tokenizer = load_model(str(tiny_dirs["llama"]))
    original = SharedContextLM._forward

    def unshifted(self, ids, mask, positions, cache=None, keep_last=False):
        if cache is not None:
            positions = positions - positions.min()
        return original(self, ids, mask, positions, cache, keep_last)

    monkeypatch.setattr(SharedContextLM, "_forward", unshifted)
    with pytest.raises(AssertionError):
        compare(model, tokenizer)


def test_workflow_setting_gives_lm_eval_accuracy(tiny_dirs, tmp_path):
    write_task(tmp_path, n_items=16)
    settings = {"offline": True, "batch_size": 4, "tasks": {"tiny_mc": {"metric": "acc"}}}
    plain = evaluate_tasks(str(tiny_dirs["opt"]), settings, "cpu", task_dir=str(tmp_path))
    shared = evaluate_tasks(str(tiny_dirs["opt"]), {**settings, "shared_context": True}, "cpu", task_dir=str(tmp_path))
    assert shared["shared_context"] and not plain["shared_context"]
    assert shared["tasks"]["tiny_mc"]["value"] == plain["tasks"]["tiny_mc"]["value"]
    assert shared["tasks"]["tiny_mc"]["n"] == 16

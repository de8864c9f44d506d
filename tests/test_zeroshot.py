"""The real lm-eval harness on a tiny random model over a local task the test writes."""

import json
import random

import torch

from icp.data.wiki_tasks import TASK_YAML
from icp.evaluate.zeroshot import evaluate_tasks
from icp.models.loading import load_model
from tiny import WORDS


def write_task(directory, n_items=12, seed=0):
    rng = random.Random(seed)
    items = []
    for _ in range(n_items):
        context = " ".join(rng.choice(WORDS) for _ in range(6))
        choices = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3))) for _ in range(4)]
        items.append({"context": context, "choices": choices, "label": rng.randrange(4)})
    data = directory / "tiny_mc.jsonl"
    data.write_text("".join(json.dumps(it) + "\n" for it in items))
    (directory / "tiny_mc.yaml").write_text(TASK_YAML.format(name="tiny_mc", data=data))
    return items


@torch.no_grad()
def own_accuracy(model, tok, items):
    correct = 0
    for it in items:
        ctx = tok(it["context"], add_special_tokens=False).input_ids
        scores = []
        for choice in it["choices"]:
            cont = tok(choice, add_special_tokens=False).input_ids
            ids = torch.tensor([ctx + cont])
            logp = torch.log_softmax(model(ids[:, :-1]).logits.float(), -1)[0]
            scores.append(sum(float(logp[len(ctx) - 1 + j, t]) for j, t in enumerate(cont)))
        correct += int(max(range(4), key=scores.__getitem__) == it["label"])
    return correct / len(items)


def test_lm_eval_accuracy_matches_own_loglikelihoods(tiny_dirs, tmp_path):
    items = write_task(tmp_path)
    settings = {"offline": True, "batch_size": 4, "tasks": {"tiny_mc": {"metric": "acc"}}}
    result = evaluate_tasks(str(tiny_dirs["llama"]), settings, "cpu", task_dir=str(tmp_path))
    model, tok = load_model(str(tiny_dirs["llama"]))
    expected = own_accuracy(model, tok, items)
    assert result["tasks"]["tiny_mc"]["n"] == len(items)
    assert result["tasks"]["tiny_mc"]["value"] == expected
    assert result["mean"] == expected

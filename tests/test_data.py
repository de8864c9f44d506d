import json

import pytest
import torch

from icp.data import corpora
from icp.data.tokens import calibration_windows, evaluation_windows, tokenize_stream
from icp.data.wiki_tasks import write_local_tasks
from tiny import write_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return write_tokenizer(tmp_path_factory.mktemp("tok"))


def test_calibration_is_seeded_and_shaped(tokenizer, text):
    a = calibration_windows(tokenizer, [text], 6, 20, seed=0)
    b = calibration_windows(tokenizer, [text], 6, 20, seed=0)
    c = calibration_windows(tokenizer, [text], 6, 20, seed=1)
    assert a.shape == (6, 20) and torch.equal(a, b) and not torch.equal(a, c)
    docs = [text[i : i + 400] for i in range(0, len(text), 400)]
    d = calibration_windows(tokenizer, docs, 4, 20, seed=0, sampler="documents")
    assert d.shape == (4, 20)


def test_evaluation_windows_are_consecutive(tokenizer, text):
    ids = tokenize_stream(tokenizer, [text])
    w = evaluation_windows(ids, 16)
    assert w.shape[0] == ids.numel() // 16
    assert torch.equal(w.flatten(), ids[: w.numel()])
    assert evaluation_windows(ids, 16, max_windows=3).shape == (3, 16)


def test_empty_or_short_text_is_an_error(tokenizer, tmp_path):
    with pytest.raises(ValueError, match="fewer than one window"):
        calibration_windows(tokenizer, ["just a few words"], 2, 64, 0)
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(ValueError, match="gave no text"):
        corpora.load_corpus({"source": "files", "paths": [str(empty)]})
    with pytest.raises(ValueError, match="unknown text source"):
        corpora.load_corpus({"source": "nowhere"})


def fake_wiki(tmp_path, n=60):
    articles = {}
    for i in range(n):
        title = f"Article {i}"
        articles[title] = {
            "title": title,
            "extract": f"Article {i} is a thing number {i}. It was made in year {1900 + i} by people. More text follows here.",
            "description": f"thing number {i}",
            "topic": "Things" if i % 2 else "Stuff",
        }
    path = tmp_path / "wiki.json"
    path.write_text(json.dumps(articles))
    return path


def test_wiki_split_is_disjoint_and_stable(tmp_path):
    path = fake_wiki(tmp_path)
    calib = corpora.wiki_offline("calib", 30, str(path))
    held = corpora.wiki_offline("eval", 30, str(path))
    titles = lambda docs: {d.split("\n\n")[0] for d in docs}  # noqa: E731
    assert titles(calib).isdisjoint(titles(held))
    assert len(calib) + len(held) == 60
    assert held == corpora.wiki_offline("eval", 30, str(path))


def test_local_tasks_use_held_out_articles_only(tmp_path):
    path = fake_wiki(tmp_path)
    names = write_local_tasks(tmp_path / "tasks", {"local_tasks": {"items": 8, "eval_percent": 30, "path": str(path)}})
    held = {d.split("\n\n")[0] for d in corpora.wiki_offline("eval", 30, str(path))}
    for name in names:
        items = [json.loads(line) for line in (tmp_path / "tasks" / f"{name}.jsonl").read_text().splitlines()]
        assert items and all(len(it["choices"]) == 4 and 0 <= it["label"] < 4 for it in items)
        for it in items:
            number = it["context"].split()[1].rstrip(".")
            assert f"Article {number}" in held
        assert (tmp_path / "tasks" / f"{name}.yaml").exists()

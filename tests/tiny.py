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


WINDOW = 8  # sliding window of the tiny models: shorter than the test sequences
SEQLEN = 24


def tiny_family_config(family: str, vocab: int):
    common = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    if family == "mistral":
        from transformers import MistralConfig

        return MistralConfig(**common, head_dim=8, sliding_window=WINDOW)
    if family == "qwen2":
        from transformers import Qwen2Config

        return Qwen2Config(**common, use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1)
    if family == "qwen3":
        from transformers import Qwen3Config

        return Qwen3Config(**common, head_dim=8, use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1)
    if family == "gemma2":
        from transformers import Gemma2Config

        return Gemma2Config(**common, head_dim=8, query_pre_attn_scalar=8, sliding_window=WINDOW,
                            final_logit_softcapping=30.0, attn_logit_softcapping=50.0)
    if family == "gemma3_text":
        from transformers import Gemma3TextConfig

        return Gemma3TextConfig(**common, head_dim=8, query_pre_attn_scalar=8, sliding_window=WINDOW,
                                layer_types=["sliding_attention", "full_attention", "sliding_attention"])
    if family == "phi3":
        from transformers import Phi3Config

        return Phi3Config(**common, sliding_window=WINDOW, pad_token_id=0)
    if family == "llama":  # Llama-3's rope scaling, through the Llama adapter
        from transformers import LlamaConfig

        return LlamaConfig(**common, rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                                      "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                      "original_max_position_embeddings": 16})
    raise ValueError(family)

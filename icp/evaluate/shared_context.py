"""lm-eval's Hugging Face model, scoring each multiple-choice context once instead of once per choice.

lm-eval's `HFLM` scores a request (context, continuation) by running the whole `context +
continuation` through the model and computing log-probabilities over the vocabulary at every
position, context included: a four-choice item runs its context four times, and on a small model
the output head and its log-softmax are ~40 % of the cost. Here the requests that share a context
are scored together, several items at a time: the contexts run once, left-padded, keeping their
key/value cache and only their last position's logits (each choice's first token); then every
choice of those items runs as one batch on the cache, each row on its own item's context. The
attention masks and positions are those `generate` uses for a left-padded batch, so every real
token sees what it sees in lm-eval's pass, and the log-likelihoods agree to rounding
(`tests/test_zeroshot_shared_context.py` checks them, and the choices picked, against `HFLM`).

Requests that share no context, or that lm-eval would truncate (longer than the model's window),
go through `HFLM`'s own pass unchanged. `zeroshot.shared_context: true` selects this class.
"""

from __future__ import annotations

import copy
import inspect

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM

Request = tuple[tuple[str, str], list[int], list[int]]
Answer = tuple[float, bool]


class SharedContextLM(HFLM):
    """`HFLM` whose log-likelihood requests score each shared context once (see the module doc)."""

    items_per_batch = 16  # items whose contexts run together
    choices_per_batch = 8  # their choices, sorted by length, run in batches of this many

    def _loglikelihood_tokens(self, requests: list[Request], disable_tqdm: bool = False,
                              override_bs: int | None = None) -> list[Answer]:
        if self.backend != "causal":
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, (_, context, continuation) in enumerate(requests):
            if len(context) + len(continuation) <= self.max_length + 1:  # lm-eval truncates beyond
                groups.setdefault(tuple(context), []).append(index)
        shared = [(context, members) for context, members in groups.items() if len(members) > 1]
        in_shared = {i for _, members in shared for i in members}
        plain = [i for i in range(len(requests)) if i not in in_shared]
        answers: list[Answer | None] = [None] * len(requests)
        if plain:
            for index, answer in zip(plain, super()._loglikelihood_tokens(
                    [requests[i] for i in plain], disable_tqdm, override_bs), strict=True):
                answers[index] = answer
        shared.sort(key=lambda group: -len(group[0]))  # similar context lengths batch together
        for start in range(0, len(shared), self.items_per_batch):
            batch = shared[start:start + self.items_per_batch]
            scored = self._score_items([list(c) for c, _ in batch],
                                       [[requests[i][2] for i in members] for _, members in batch])
            for (_, members), item_answers in zip(batch, scored, strict=True):
                for index, answer in zip(members, item_answers, strict=True):
                    answers[index] = answer
                    self.cache_hook.add_partial("loglikelihood", requests[index][0], answer)
        return answers  # type: ignore[return-value]

    def _forward_params(self):
        if getattr(self, "_params", None) is None:  # the cache's keyword moved (past_key_values -> cache) in transformers 5.2x
            self._params = inspect.signature(self.model.forward).parameters
        return self._params

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                 cache=None, keep_last: bool = False):
        params = self._forward_params()
        kwargs = {"attention_mask": mask, "position_ids": positions, "use_cache": cache is None}
        if cache is not None:
            kwargs["cache" if "cache" in params else "past_key_values"] = cache
        if keep_last and "logits_to_keep" in params:
            kwargs["logits_to_keep"] = 1
        with torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                            enabled=self.mixed_precision_dtype is not None):
            return self.model(ids, **kwargs)

    @torch.no_grad()
    def _score_items(self, contexts: list[list[int]], choices: list[list[list[int]]]) -> list[list[Answer]]:
        """(sum of log-probabilities, greedy?) of each item's choices after its context."""
        device, width = self.device, max(len(c) for c in contexts)
        ids = torch.zeros(len(contexts), width, dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for row, context in enumerate(contexts):  # left-padded: every row's last position is real
            ids[row, width - len(context):] = torch.tensor(context, device=device)
            mask[row, width - len(context):] = 1
        out = self._forward(ids, mask, (mask.cumsum(-1) - 1).clamp(min=0), keep_last=True)
        first = F.log_softmax(out.logits[:, -1, : self.vocab_size], dim=-1, dtype=self.softmax_dtype)
        owner = [item for item, item_choices in enumerate(choices) for _ in item_choices]
        flat = [tokens for item_choices in choices for tokens in item_choices]
        cache = out["cache"] if "cache" in out else out.past_key_values  # transformers 5.2x: cache
        lengths = torch.tensor([len(c) for c in contexts], device=device)
        rest: dict[int, torch.Tensor] = {}  # choice row -> log-probabilities after each of its tokens but the last
        order = sorted((r for r in range(len(flat)) if len(flat[r]) > 1), key=lambda r: -len(flat[r]))
        for start in range(0, len(order), self.choices_per_batch):  # similar lengths pad least
            chunk = order[start:start + self.choices_per_batch]
            rows = torch.tensor([owner[r] for r in chunk], device=device)
            width = len(flat[chunk[0]]) - 1
            inputs = torch.zeros(len(chunk), width, dtype=torch.long, device=device)
            for i, r in enumerate(chunk):
                inputs[i, : len(flat[r]) - 1] = torch.tensor(flat[r][:-1], device=device)
            chunk_cache = copy.deepcopy(cache)
            chunk_cache.batch_select_indices(rows)  # each row on its own item's context
            positions = lengths[rows][:, None] + torch.arange(width, device=device)
            # the padding after a short choice comes last, so no real token attends to it
            full_mask = torch.cat([mask[rows], torch.ones_like(inputs)], dim=1)
            logits = self._forward(inputs, full_mask, positions, cache=chunk_cache).logits
            logp = F.log_softmax(logits[..., : self.vocab_size], dim=-1, dtype=self.softmax_dtype)
            for i, r in enumerate(chunk):
                rest[r] = logp[i, : len(flat[r]) - 1]
        answers: list[list[Answer]] = [[] for _ in contexts]
        for row, tokens in enumerate(flat):
            item = owner[row]
            steps = torch.cat([first[item][None], rest[row]]) if row in rest else first[item][None]
            target = torch.tensor(tokens, device=steps.device)
            logprob = steps.gather(1, target[:, None]).sum()
            answers[item].append((float(logprob), bool((steps.argmax(-1) == target).all())))
        return answers

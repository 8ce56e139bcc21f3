"""Choosing the next token from logits: greedy, or temperature / top-k / top-p sampling; OpenAI's
frequency / presence penalties; the chosen token's log-probability."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token's log-probability under the model (its raw logits, before penalties,
    temperature or filters) and the ``top`` most likely tokens as (id, logprob), best first."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


def token_logprob(logits: torch.Tensor, token: int, top: int = 0) -> TokenLogprob:
    """Logits [V] -> the :class:`TokenLogprob` of ``token`` with the ``top`` best alternatives."""
    logprobs = logits.float().log_softmax(-1)
    best = torch.topk(logprobs, top) if top else None
    pairs = () if best is None else tuple(zip(best.indices.tolist(), best.values.tolist(), strict=True))
    return TokenLogprob(token, float(logprobs[token]), pairs)


def penalize(
    logits: torch.Tensor, counts: Mapping[int, int], frequency: float, presence: float
) -> torch.Tensor:
    """OpenAI's penalties: logits [V] minus ``count * frequency + (count > 0) * presence`` for every
    token already generated ``count`` times (``counts``: token id -> times)."""
    if not counts or not (frequency or presence):
        return logits
    ids = torch.tensor(list(counts), dtype=torch.long, device=logits.device)
    times = torch.tensor(list(counts.values()), dtype=logits.dtype, device=logits.device)
    return logits.index_put((ids,), logits[ids] - times * frequency - presence)


def next_tokens(
    logits: torch.Tensor,
    temperature: float,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Logits [B, V] -> token ids [B]; greedy when ``temperature == 0``.

    Otherwise the filters run in the order of transformers' ``generate`` (temperature, top-k, top-p),
    so the defaults reproduce what the original ``model.generate(do_sample=True, ...)`` did.
    """
    if temperature == 0:
        return logits.argmax(-1)
    scores = logits.float() / temperature
    if top_k is not None and top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        scores = _top_p_filter(scores, top_p)
    probs = scores.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def _top_p_filter(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of top tokens whose probability mass reaches ``top_p`` (at least one)."""
    sorted_scores, order = scores.sort(dim=-1)
    cumulative = sorted_scores.softmax(-1).cumsum(-1)
    drop_sorted = cumulative <= 1 - top_p
    drop_sorted[:, -1] = False
    drop = drop_sorted.scatter(1, order, drop_sorted)
    return scores.masked_fill(drop, float("-inf"))

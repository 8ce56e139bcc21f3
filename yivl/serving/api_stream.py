"""Chat-completion response bodies: the whole answer, or server-sent events in OpenAI's chunk format.

A :class:`Prepared` request (checked by ``yivl.serving.api``) carries what its response repeats.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from yivl.models.generation import Generation, GenerationSettings
from yivl.models.sampling import TokenLogprob
from yivl.serving.api_errors import as_api_error
from yivl.serving.engine import Request as EngineRequest
from yivl.serving.openai_format import ChatRequest
from yivl.serving.worker import AsyncEventStream


@dataclass
class Prepared:
    """A validated request, ready for the worker."""

    chat: ChatRequest
    requests: list[EngineRequest]
    settings: GenerationSettings
    prompt_tokens: int
    token_piece: Callable[[int], tuple[str, bytes]]  # token id -> its text and bytes (for logprobs)
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))


def usage(prepared: Prepared, generations: list[Generation]) -> dict:
    """Token counts as the model saw them: the prompt once (image features included), and every token
    each choice generated (eos and any stop string included)."""
    done = sum(g.num_tokens for g in generations)
    return {
        "prompt_tokens": prepared.prompt_tokens,
        "completion_tokens": done,
        "total_tokens": prepared.prompt_tokens + done,
    }


def completion_body(generations: list[Generation], prepared: Prepared, model: str) -> dict:
    """The ``chat.completion`` object for finished answers."""
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": g.text},
            "logprobs": logprobs_body(g.logprobs, prepared.token_piece),
            "finish_reason": g.finish_reason,
        }
        for i, g in enumerate(generations)
    ]
    return {
        "id": prepared.id,
        "object": "chat.completion",
        "created": prepared.created,
        "model": model,
        "choices": choices,
        "usage": usage(prepared, generations),
    }


def _chunk(prepared: Prepared, model: str, choices: list[dict], extra: dict | None = None) -> str:
    body = {
        "id": prepared.id,
        "object": "chat.completion.chunk",
        "created": prepared.created,
        "model": model,
        "choices": choices,
        **(extra or {}),
    }
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def _delta(index: int, delta: dict, finish: str | None = None, logprobs: dict | None = None) -> dict:
    return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}


def logprobs_body(
    entries: list[TokenLogprob] | None, piece: Callable[[int], tuple[str, bytes]]
) -> dict | None:
    """OpenAI's ``choices[i].logprobs``: ``content`` holds token, logprob, bytes and top_logprobs per
    generated token (None when the request did not ask for logprobs)."""
    if entries is None:
        return None

    def one(token: int, logprob: float) -> dict:
        text, raw = piece(token)
        return {"token": text, "logprob": logprob, "bytes": list(raw)}

    content = [{**one(e.token, e.logprob), "top_logprobs": [one(t, lp) for t, lp in e.top]} for e in entries]
    return {"content": content, "refusal": None}


async def sse_chunks(events: AsyncEventStream, prepared: Prepared, model: str) -> AsyncIterator[str]:
    """Server-sent events: a role chunk per choice, content deltas, a finish chunk per choice, the usage
    chunk when ``stream_options.include_usage``, then ``data: [DONE]``. A failure after the headers went
    out is sent as an ``error`` event (OpenAI clients raise it)."""
    n = len(prepared.requests)
    for i in range(n):
        yield _chunk(prepared, model, [_delta(i, {"role": "assistant", "content": ""})])
    async for event in events:
        if event.kind == "text":
            logprobs = (
                logprobs_body(event.logprobs, prepared.token_piece) if prepared.settings.logprobs else None
            )
            yield _chunk(prepared, model, [_delta(event.index, {"content": event.delta}, None, logprobs)])
        elif event.kind == "done":
            for i, generation in enumerate(event.generations):
                yield _chunk(prepared, model, [_delta(i, {}, generation.finish_reason)])
            options = prepared.chat.stream_options
            if options is not None and options.include_usage:
                yield _chunk(prepared, model, [], {"usage": usage(prepared, event.generations)})
        else:
            yield f"data: {json.dumps(as_api_error(event.error).body())}\n\n"
    yield "data: [DONE]\n\n"

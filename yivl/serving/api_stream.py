"""Chat-completion response bodies: the whole answer, or server-sent events in OpenAI's chunk format."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from yivl.serving.api_errors import as_api_error
from yivl.serving.worker import AsyncEventStream

if TYPE_CHECKING:
    from yivl.serving.api import Prepared
    from yivl.serving.engine import Engine


def completion_tokens(engine: Engine, answer: str) -> int:
    """Tokens in an answer, re-tokenized (the stop string and stripped whitespace are not counted)."""
    return len(engine.tokenizer.encode(answer)) if answer else 0


def finish_reason(engine: Engine, prepared: Prepared, answer: str) -> str:
    """``length`` when the answer used the whole token budget, else ``stop``."""
    budget = min(prepared.settings.max_new_tokens, engine.context_length - prepared.prompt_tokens)
    return "length" if completion_tokens(engine, answer) >= budget else "stop"


def usage(engine: Engine, prepared: Prepared, answers: list[str]) -> dict:
    done = sum(completion_tokens(engine, a) for a in answers)
    return {
        "prompt_tokens": prepared.prompt_tokens,
        "completion_tokens": done,
        "total_tokens": prepared.prompt_tokens + done,
    }


def completion_body(answers: list[str], prepared: Prepared, engine: Engine, model: str) -> dict:
    """The ``chat.completion`` object for finished answers."""
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": answer},
            "logprobs": None,
            "finish_reason": finish_reason(engine, prepared, answer),
        }
        for i, answer in enumerate(answers)
    ]
    return {
        "id": prepared.id,
        "object": "chat.completion",
        "created": prepared.created,
        "model": model,
        "choices": choices,
        "usage": usage(engine, prepared, answers),
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


def _delta(index: int, delta: dict, finish: str | None = None) -> dict:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}


async def sse_chunks(
    events: AsyncEventStream, prepared: Prepared, engine: Engine, model: str
) -> AsyncIterator[str]:
    """Server-sent events: a role chunk per choice, content deltas, a finish chunk per choice, the usage
    chunk when ``stream_options.include_usage``, then ``data: [DONE]``. A failure after the headers went
    out is sent as an ``error`` event (OpenAI clients raise it)."""
    n = len(prepared.requests)
    for i in range(n):
        yield _chunk(prepared, model, [_delta(i, {"role": "assistant", "content": ""})])
    async for event in events:
        if event.kind == "text":
            yield _chunk(prepared, model, [_delta(event.index, {"content": event.delta})])
        elif event.kind == "done":
            for i, answer in enumerate(event.answers):
                yield _chunk(prepared, model, [_delta(i, {}, finish_reason(engine, prepared, answer))])
            options = prepared.chat.stream_options
            if options is not None and options.include_usage:
                yield _chunk(prepared, model, [], {"usage": usage(engine, prepared, event.answers)})
        else:
            yield f"data: {json.dumps(as_api_error(event.error).body())}\n\n"
    yield "data: [DONE]\n\n"

"""``usage`` and ``finish_reason`` are the engine's own counts: the prompt as the model saw it (image
features included) and every token generated, for plain and streamed completions."""

from __future__ import annotations

from pathlib import Path

import openai

from yivl.data.chat import Turn
from yivl.models.generation import Generation, GenerationSettings
from yivl.serving.engine import Engine, Request

from .helpers import data_url, image_message

ASSET = Path(__file__).resolve().parents[2] / "assets" / "shapes.png"


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=60)


def engine_run(
    engine: Engine, request: Request, max_new_tokens: int, stop: tuple[str, ...] = ()
) -> Generation:
    settings = GenerationSettings(temperature=0, max_new_tokens=max_new_tokens, stop=("###", *stop))
    return engine.generate_full([request], settings)[0]


def prompt_tokens(engine: Engine, request: Request) -> int:
    return engine.prompt_length(engine.prompt_ids(request.turns, request.image is not None, request.system))


def test_plain_completion_reports_the_engine_counts(api_url: str, engine: Engine):
    question = "Which shapes?"
    request = Request([Turn("human", question)], ASSET)
    want = engine_run(engine, request, 12)
    reply = client(api_url).chat.completions.create(
        model="yi-vl",
        messages=[image_message(data_url(ASSET.read_bytes()), question)],
        temperature=0,
        max_tokens=12,
    )
    choice = reply.choices[0]
    assert (choice.message.content, choice.finish_reason) == (want.text, want.finish_reason)
    used = prompt_tokens(engine, request)
    assert used > engine.image_tokens  # the image counts with all its features, not as one placeholder
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (used, want.num_tokens)
    assert reply.usage.total_tokens == used + want.num_tokens


def test_streamed_completion_reports_the_same_counts(api_url: str, engine: Engine):
    request = Request([Turn("human", "Tell me more")])
    want = engine_run(engine, request, 16)
    chunks = list(
        client(api_url).chat.completions.create(
            model="yi-vl",
            messages=[{"role": "user", "content": "Tell me more"}],
            temperature=0,
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finished = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert (text, finished) == (want.text, [want.finish_reason])
    usage = chunks[-1].usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (prompt_tokens(engine, request), want.num_tokens)


def test_hitting_max_tokens_is_length_and_counts_exactly_that_many(api_url: str, engine: Engine):
    request = Request([Turn("human", "Hello there")])
    assert engine_run(engine, request, 3).finish_reason == "length"  # the tiny model does not stop in 3
    for stream in (False, True):
        reply = client(api_url).chat.completions.create(
            model="yi-vl",
            messages=[{"role": "user", "content": "Hello there"}],
            temperature=0,
            max_tokens=3,
            stream=stream,
            **({"stream_options": {"include_usage": True}} if stream else {}),
        )
        if stream:
            chunks = list(reply)
            reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
            assert reasons == ["length"] and chunks[-1].usage.completion_tokens == 3
        else:
            assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 3


def test_a_stop_string_is_stop_and_its_tokens_count(api_url: str, engine: Engine):
    request = Request([Turn("human", "Tell me more")])
    full = engine_run(engine, request, 24)
    stop = full.text.strip()[4:7]
    assert stop.strip(), f"pick a stop string from the answer {full.text!r}"
    want = engine_run(engine, request, 24, stop=(stop,))
    assert want.finish_reason == "stop" and want.num_tokens < full.num_tokens
    reply = client(api_url).chat.completions.create(
        model="yi-vl",
        messages=[{"role": "user", "content": "Tell me more"}],
        temperature=0,
        max_tokens=24,
        stop=[stop],
    )
    assert reply.choices[0].finish_reason == "stop"
    # generated tokens, not the cut answer re-tokenized: the tokens that spelled the stop string count too
    assert reply.usage.completion_tokens == want.num_tokens


def test_n_choices_count_the_prompt_once_and_every_choice(api_url: str, engine: Engine):
    request = Request([Turn("human", "Hi")])
    want = engine_run(engine, request, 5)
    reply = client(api_url).chat.completions.create(
        model="yi-vl", messages=[{"role": "user", "content": "Hi"}], temperature=0, max_tokens=5, n=3
    )
    assert reply.usage.prompt_tokens == prompt_tokens(engine, request)
    assert reply.usage.completion_tokens == 3 * want.num_tokens
    assert [c.finish_reason for c in reply.choices] == [want.finish_reason] * 3

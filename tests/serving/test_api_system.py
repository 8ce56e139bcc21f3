"""System messages: ``use`` (the default) renders them instead of Yi-VL's system prompt; ``ignore`` drops
them; ``reject`` refuses them; one after the conversation started is a 400 under ``use``."""

from __future__ import annotations

import httpx
import openai
import pytest

from yivl.data.chat import SYSTEM_PROMPT, Turn
from yivl.models.generation import GenerationSettings
from yivl.serving.api import create_app
from yivl.serving.api_errors import ApiError
from yivl.serving.engine import Engine, Request
from yivl.serving.openai_format import ChatMessage, to_conversation
from yivl.serving.worker import GenerationWorker

from .conftest import api_settings
from .helpers import RecordingEngine, serve

GREEDY = {"temperature": 0, "max_tokens": 10}
QUESTION = {"role": "user", "content": "Describe a red square."}
TURNS = [Turn("human", "Describe a red square.")]


def ask(url: str, messages: list[dict]) -> openai.types.chat.ChatCompletion:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=60)
    return client.chat.completions.create(model="yi-vl", messages=messages, **GREEDY)


def direct(engine: Engine, system: str = SYSTEM_PROMPT) -> str:
    settings = GenerationSettings(temperature=0, max_new_tokens=GREEDY["max_tokens"])
    return engine.generate([Request(TURNS, system=system)], settings)[0]


def messages(*dicts: dict) -> list[ChatMessage]:
    return [ChatMessage.model_validate(d) for d in dicts]


def test_leading_system_messages_are_joined_into_the_system_prompt():
    conversation = to_conversation(
        messages(
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
            QUESTION,
        )
    )
    assert conversation.system == "You are terse.\nAnswer in English."
    assert conversation.turns == TURNS
    assert to_conversation(messages(QUESTION)).system == SYSTEM_PROMPT


def test_a_system_message_after_the_conversation_started_is_refused():
    late = messages(
        QUESTION, {"role": "assistant", "content": "A square."}, {"role": "system", "content": "x"}, QUESTION
    )
    with pytest.raises(ApiError) as info:
        to_conversation(late)
    assert info.value.status == 400 and info.value.param == "messages[2].role"
    assert "before the first user" in str(info.value)
    assert to_conversation(late, "ignore").system == SYSTEM_PROMPT  # ignore drops it wherever it is


def test_use_renders_the_system_message_in_place_of_yi_vl_s(engine: Engine):
    recorder = RecordingEngine(engine)
    worker = GenerationWorker(recorder)
    system = "You are a terse assistant. Answer in one word."
    try:
        with serve(create_app(engine, worker, api_settings())) as url:
            reply = ask(url, [{"role": "system", "content": system}, QUESTION])
    finally:
        worker.close()
    assert [r.system for r in recorder.requests] == [system]
    expected = direct(engine, system)
    assert expected != direct(engine)  # the prompt changed, and with it the greedy answer
    assert reply.choices[0].message.content == expected
    assert reply.usage.prompt_tokens == engine.prompt_length(engine.prompt_ids(TURNS, False, system))
    assert reply.usage.prompt_tokens < engine.prompt_length(engine.prompt_ids(TURNS, False))


def test_ignore_answers_under_yi_vl_s_prompt(engine: Engine, worker: GenerationWorker):
    with serve(create_app(engine, worker, api_settings(system_messages="ignore"))) as url:
        reply = ask(url, [{"role": "system", "content": "Answer in one word."}, QUESTION])
        late = ask(
            url,
            [QUESTION, {"role": "assistant", "content": "ok"}, {"role": "system", "content": "x"}, QUESTION],
        )
    assert reply.choices[0].message.content == direct(engine)
    assert late.choices[0].message.content is not None


def test_reject_refuses_them_and_keeps_serving(engine: Engine, worker: GenerationWorker):
    with serve(create_app(engine, worker, api_settings(system_messages="reject"))) as url:
        with pytest.raises(openai.BadRequestError) as info:
            ask(url, [{"role": "system", "content": "Answer in one word."}, QUESTION])
        assert info.value.code == "unsupported_role" and "api.system_messages=use" in info.value.message
        assert ask(url, [QUESTION]).choices[0].message.content == direct(engine)


def test_a_late_system_message_is_a_400_through_the_server(api_url: str):
    body = {"model": "yi-vl", "messages": [QUESTION, {"role": "system", "content": "x"}], **GREEDY}
    response = httpx.post(f"{api_url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "misplaced_system_message"

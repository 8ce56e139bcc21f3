"""Malformed and unsupported requests are 400s with OpenAI bodies (never 500s), types are not coerced, and
the keep-alive connection that carried the bad request answers the next one."""

from __future__ import annotations

import logging

import httpx
import openai
import pytest

from yivl.serving.api import create_app
from yivl.serving.engine import Engine
from yivl.serving.worker import GenerationWorker

from .conftest import api_settings
from .helpers import answered_on_one_connection, data_url, png_bytes, serve
from .test_api_errors import body, check_error

GOOD = body()
DEEP = b"[" * 1000 + b"]" * 1000

MALFORMED = [
    (
        "lone surrogate",
        b'{"model": "yi-vl", "messages": [{"role": "user", "content": "\\ud800"}]}',
        "invalid_json",
    ),
    (
        "nested 1000 deep in an ignored field",
        b'{"model": "yi-vl", "user": ' + DEEP + b', "messages": []}',
        None,
    ),
    ("nested 1000 deep in a message", b'{"model": "yi-vl", "messages": ' + DEEP + b"}", "invalid_json"),
]

BAD_VALUES = [
    ("seed 2**63", body(seed=2**63), "seed"),
    ("seed below -2**63", body(seed=-(2**63) - 1), "seed"),
    ("seed 2**70", body(seed=2**70), "seed"),
    ("max_tokens as a string", body(max_tokens="5"), "max_tokens"),
    ("stream as a string", body(stream="yes"), "stream"),
    ("n as a float", body(n=2.0), "n"),
    ("content as a number", body(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
]

UNSUPPORTED = [
    ("response_format", {"type": "json_object"}),
    ("tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}]),
    ("tool_choice", "auto"),
    ("logit_bias", {"50256": -100}),
    ("functions", [{"name": "f", "parameters": {}}]),
    ("function_call", "auto"),
    ("parallel_tool_calls", True),
    ("prediction", {"type": "content", "content": "x"}),
    ("modalities", ["text", "audio"]),
]


IMAGE = data_url(png_bytes())


def parts(*content: dict) -> dict:
    return body(messages=[{"role": "user", "content": list(content)}])


NESTED_UNSUPPORTED = [
    ("a content part's field", parts({"type": "text", "text": "hi", "foo": 1}), "messages[0].content[0].foo"),
    (
        "an image_url field",
        parts({"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": IMAGE, "zzz": "x"}}),
        "messages[0].content[1].image_url.zzz",
    ),
    (
        "image_url.detail high",
        parts(
            {"type": "text", "text": "hi"},
            {"type": "image_url", "image_url": {"url": IMAGE, "detail": "high"}},
        ),
        "messages[0].content[1].image_url.detail",
    ),
    (
        "image_url.detail low",
        parts(
            {"type": "text", "text": "hi"},
            {"type": "image_url", "image_url": {"url": IMAGE, "detail": "low"}},
        ),
        "messages[0].content[1].image_url.detail",
    ),
    (
        "a stream_options field",
        body(stream=True, stream_options={"include_usage": True, "zzz": 1}),
        "stream_options.zzz",
    ),
]


@pytest.mark.parametrize(
    ("name", "payload", "param"), NESTED_UNSUPPORTED, ids=[c[0] for c in NESTED_UNSUPPORTED]
)
def test_unknown_fields_below_the_top_level_are_refused_by_path(
    api_url: str, name: str, payload: dict, param: str
):
    with httpx.Client(timeout=60) as client:
        refused = answered_on_one_connection(client, api_url, payload, GOOD)
    error = check_error(refused, 400, "unsupported_parameter", param)
    assert error["message"].startswith(f"{param} is not supported by this server; remove it")


def test_image_detail_auto_is_accepted_and_other_values_are_invalid(api_url: str):
    auto = parts(
        {"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": IMAGE, "detail": "auto"}}
    )
    response = httpx.post(f"{api_url}/v1/chat/completions", json=auto, timeout=60)
    assert response.status_code == 200, response.text
    odd = parts(
        {"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": IMAGE, "detail": "max"}}
    )
    response = httpx.post(f"{api_url}/v1/chat/completions", json=odd, timeout=60)
    check_error(response, 400, "invalid_value", "messages[0].content[1].image_url.detail")


@pytest.mark.parametrize(("name", "raw", "code"), MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_json_is_a_400_and_the_connection_stays(api_url: str, name: str, raw: bytes, code: str):
    with httpx.Client(timeout=60) as client:
        refused = answered_on_one_connection(client, api_url, raw, GOOD)
    error = check_error(refused, 400, "invalid_json", None)
    assert error["message"].startswith("the request body is not valid JSON: ")
    if name.startswith("nested"):
        assert "recursion limit exceeded" in error["message"]


@pytest.mark.parametrize(("name", "payload", "param"), BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
def test_wrong_types_and_ranges_are_refused_not_coerced(api_url: str, name: str, payload: dict, param: str):
    with httpx.Client(timeout=60) as client:
        refused = answered_on_one_connection(client, api_url, payload, GOOD)
    check_error(refused, 400, "invalid_value", param)


def test_the_seed_range_is_int64(api_url: str):
    for seed in (2**63 - 1, -(2**63), 0):
        reply = httpx.post(
            f"{api_url}/v1/chat/completions", json=body(seed=seed, temperature=1.0), timeout=60
        )
        assert reply.status_code == 200, reply.text


@pytest.mark.parametrize(("field", "value"), UNSUPPORTED, ids=[c[0] for c in UNSUPPORTED])
def test_unimplemented_fields_are_unsupported_parameter(api_url: str, field: str, value: object):
    with httpx.Client(timeout=60) as client:
        refused = answered_on_one_connection(client, api_url, body(**{field: value}), GOOD)
    error = check_error(refused, 400, "unsupported_parameter", field)
    assert error["message"] == (
        f"{field} is not supported by this server; remove it (or start the server with "
        "api.unsupported_fields=warn to have it ignored)"
    )


def test_the_openai_client_sees_unsupported_parameter(api_url: str):
    client = openai.OpenAI(base_url=f"{api_url}/v1", api_key="none", max_retries=0, timeout=60)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="yi-vl",
            messages=[{"role": "user", "content": "Hi"}],
            response_format={"type": "json_object"},
        )
    assert (info.value.code, info.value.param) == ("unsupported_parameter", "response_format")


def test_a_message_with_tool_calls_is_refused_and_null_ones_pass(api_url: str):
    call = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    echoed = {"role": "assistant", "content": "ok", "tool_calls": None, "refusal": None, "annotations": []}
    with_calls = body(
        messages=[
            {"role": "user", "content": "Hi"},
            {**echoed, "tool_calls": call},
            {"role": "user", "content": "Go"},
        ]
    )
    response = httpx.post(f"{api_url}/v1/chat/completions", json=with_calls, timeout=60)
    check_error(response, 400, "unsupported_parameter", "messages[1].tool_calls")
    plain = body(
        messages=[{"role": "user", "content": "Hi", "name": "ann"}, echoed, {"role": "user", "content": "Go"}]
    )
    assert httpx.post(f"{api_url}/v1/chat/completions", json=plain, timeout=60).status_code == 200


def test_sampling_extensions_and_bookkeeping_fields_are_not_refused(api_url: str):
    passed = body(
        logprobs=True,
        top_logprobs=2,
        top_k=5,
        frequency_penalty=0.5,
        presence_penalty=0.5,
        user="u1",
        metadata={"k": "v"},
        store=False,
        service_tier="auto",
    )
    response = httpx.post(f"{api_url}/v1/chat/completions", json=passed, timeout=60)
    assert response.status_code == 200, response.text


def test_warn_mode_logs_the_field_and_answers(
    engine: Engine, worker: GenerationWorker, caplog: pytest.LogCaptureFixture
):
    app = create_app(engine, worker, api_settings(unsupported_fields="warn"))
    with serve(app) as url, caplog.at_level(logging.WARNING, logger="yivl.serving.openai_format"):
        payload = body(response_format={"type": "json_object"})
        response = httpx.post(f"{url}/v1/chat/completions", json=payload, timeout=60)
        nested = [payload for _, payload, _ in NESTED_UNSUPPORTED]
        answers = [httpx.post(f"{url}/v1/chat/completions", json=p, timeout=60) for p in nested]
    assert response.status_code == 200, response.text
    assert [a.status_code for a in answers] == [200] * len(nested), [a.text for a in answers]
    assert "ignoring response_format: this server does not implement it (api.unsupported_fields=warn)" in (
        caplog.text
    )
    for _, _, param in NESTED_UNSUPPORTED:
        assert f"ignoring {param}: this server does not implement it" in caplog.text

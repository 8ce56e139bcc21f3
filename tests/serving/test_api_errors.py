"""Every bad request gets a 4xx with an OpenAI-style error body, and the server keeps answering."""

from __future__ import annotations

import base64

import httpx
import openai
import pytest

from .conftest import MAX_IMAGE_BYTES, MAX_REQUEST_BYTES
from .helpers import answered_on_one_connection, data_url, image_message, png_bytes

URL_OK = data_url(png_bytes())
USER = {"role": "user", "content": "Hi"}


def body(**changes: object) -> dict:
    return {"model": "yi-vl", "messages": [USER], "max_tokens": 4, "temperature": 0, **changes}


BAD_JSON = [
    ("malformed JSON", b'{"model": "yi-vl", "messages": [', 400, "invalid_json"),
    ("not an object", b"[1, 2, 3]", 400, "invalid_json"),
    ("not UTF-8", b'{"model": "\xff"}', 400, "invalid_json"),
]

BAD_REQUESTS = [
    ("unknown model", body(model="gpt-4o"), 404, "model_not_found", "model"),
    ("no messages", body(messages=[]), 400, "invalid_value", "messages"),
    (
        "no user turn",
        body(messages=[{"role": "assistant", "content": "Hello"}]),
        400,
        "invalid_conversation",
        "messages",
    ),
    (
        "last turn not the user's",
        body(messages=[USER, {"role": "assistant", "content": "Yo"}]),
        400,
        "invalid_conversation",
        "messages",
    ),
    (
        "system message after the user's",
        body(messages=[USER, {"role": "system", "content": "Be brief"}, USER]),
        400,
        "misplaced_system_message",
        "messages[1].role",
    ),
    (
        "image in a system message",
        body(
            messages=[
                {"role": "system", "content": [{"type": "image_url", "image_url": {"url": URL_OK}}]},
                USER,
            ]
        ),
        400,
        "unsupported_content",
        "messages[0].content[0]",
    ),
    ("tool role", body(messages=[{"role": "tool", "content": "42"}, USER]), 400, "unsupported_role", None),
    ("temperature type", body(temperature="hot"), 400, "invalid_value", "temperature"),
    ("top_p range", body(top_p=0), 400, "invalid_value", "top_p"),
    ("max_tokens range", body(max_tokens=0), 400, "invalid_value", "max_tokens"),
    ("five stop strings", body(stop=["a", "b", "c", "d", "e"]), 400, "invalid_value", "stop"),
    ("an empty stop string", body(stop=["###", ""]), 400, "invalid_value", "stop"),
    ("an empty stop", body(stop=""), 400, "invalid_value", "stop"),
    (
        "temperature NaN",
        b'{"model": "yi-vl", "messages": [{"role": "user", "content": "Hi"}], "temperature": NaN}',
        400,
        "invalid_value",
        "temperature",
    ),
    (
        "top_p Infinity",
        b'{"model": "yi-vl", "messages": [{"role": "user", "content": "Hi"}], "top_p": Infinity}',
        400,
        "invalid_value",
        "top_p",
    ),
    ("top_logprobs without logprobs", body(top_logprobs=2), 400, "invalid_value", "top_logprobs"),
    (
        "no text in the last message",
        body(messages=[{"role": "user", "content": None}]),
        400,
        "invalid_conversation",
        "messages",
    ),
    (
        "a file URL with a host",
        body(messages=[image_message("file://evil/etc/passwd")]),
        400,
        "invalid_image_url",
        "messages[0].content[1].image_url",
    ),
    ("missing model", {"messages": [USER]}, 400, "invalid_value", "model"),
    (
        "two images",
        body(messages=[image_message(URL_OK), image_message(URL_OK)]),
        400,
        "too_many_images",
        "messages[1].content[1].image_url",
    ),
    (
        "two images in one message",
        body(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": URL_OK}},
                        {"type": "image_url", "image_url": {"url": URL_OK}},
                    ],
                }
            ]
        ),
        400,
        "too_many_images",
        "messages[0].content[1]",
    ),
    (
        "not an image",
        body(messages=[image_message(data_url(b"hello, not a png"))]),
        400,
        "invalid_image",
        None,
    ),
    (
        "truncated image",
        body(messages=[image_message(data_url(png_bytes()[:40]))]),
        400,
        "invalid_image",
        None,
    ),
    (
        "bad base64",
        body(messages=[image_message("data:image/png;base64,@@@@")]),
        400,
        "invalid_image_url",
        None,
    ),
    ("not base64", body(messages=[image_message("data:image/png,rawbytes")]), 400, "invalid_image_url", None),
    (
        "oversized image",
        body(messages=[image_message(data_url(b"\0" * (MAX_IMAGE_BYTES + 10)))]),
        413,
        "image_too_large",
        None,
    ),
    (
        "remote URL",
        body(messages=[image_message("http://127.0.0.1:9/cat.png")]),
        400,
        "remote_images_disabled",
        None,
    ),
    ("missing file", body(messages=[image_message("file:///no/such/image.png")]), 400, "invalid_image", None),
    ("ftp URL", body(messages=[image_message("ftp://127.0.0.1/cat.png")]), 400, "invalid_image_url", None),
    (
        "image in an assistant turn",
        body(
            messages=[
                USER,
                {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": URL_OK}}]},
            ]
        ),
        400,
        "unsupported_content",
        None,
    ),
    (
        "audio part",
        body(messages=[{"role": "user", "content": [{"type": "input_audio"}]}]),
        400,
        "unsupported_content",
        None,
    ),
    (
        "placeholder text",
        body(messages=[{"role": "user", "content": "<image_placeholder> hi"}]),
        400,
        "invalid_value",
        None,
    ),
    ("n too large", body(n=100), 400, "invalid_value", "n"),
    (
        "context overflow",
        body(messages=[{"role": "user", "content": "word " * 6000}]),
        400,
        "context_length_exceeded",
        "messages",
    ),
]


def check_error(response: httpx.Response, status: int, code: str | None, param: str | None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and "\n" not in error["message"]
    assert error["type"] == ("invalid_request_error" if status < 500 else "server_error")
    assert error["code"], "every error has a code"
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error


def still_serves(url: str) -> None:
    response = httpx.post(f"{url}/v1/chat/completions", json=body(), timeout=60)
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] is not None


@pytest.mark.parametrize(("name", "raw", "status", "code"), BAD_JSON, ids=[c[0] for c in BAD_JSON])
def test_malformed_bodies(api_url: str, name: str, raw: bytes, status: int, code: str):
    headers = {"Content-Type": "application/json"}
    response = httpx.post(f"{api_url}/v1/chat/completions", content=raw, headers=headers, timeout=30)
    check_error(response, status, code, None)


@pytest.mark.parametrize(
    ("name", "payload", "status", "code", "param"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS]
)
def test_bad_requests(
    api_url: str, name: str, payload: dict, status: int, code: str | None, param: str | None
):
    with httpx.Client(timeout=60) as client:
        check_error(answered_on_one_connection(client, api_url, payload, body()), status, code, param)


def test_a_number_that_is_not_finite_is_named_so(api_url: str):
    raw = b'{"model": "yi-vl", "messages": [{"role": "user", "content": "Hi"}], "temperature": NaN}'
    response = httpx.post(
        f"{api_url}/v1/chat/completions",
        content=raw,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert check_error(response, 400, "invalid_value", "temperature")["message"] == (
        "temperature: Input should be a finite number"
    )


def test_oversized_body_is_refused_before_it_is_read(api_url: str):
    big = body(messages=[{"role": "user", "content": "x" * (MAX_REQUEST_BYTES + 1)}])
    response = httpx.post(f"{api_url}/v1/chat/completions", json=big, timeout=60)
    check_error(response, 413, "request_too_large", None)


def test_oversized_chunked_body_is_refused(api_url: str):
    chunks = (b"x" * 50_000 for _ in range(MAX_REQUEST_BYTES // 50_000 + 2))  # no Content-Length
    headers = {"Content-Type": "application/json"}
    response = httpx.post(f"{api_url}/v1/chat/completions", content=chunks, headers=headers, timeout=60)
    check_error(response, 413, "request_too_large", None)


def test_unknown_route_and_method_get_openai_bodies(api_url: str):
    check_error(httpx.get(f"{api_url}/v1/nothing", timeout=10), 404, "not_found", None)
    with httpx.Client(timeout=10) as client:
        for method in ("GET", "OPTIONS", "PUT"):
            refused = client.request(method, f"{api_url}/v1/chat/completions")
            check_error(refused, 405, "method_not_allowed", None)
            assert refused.headers["allow"] == "POST"
    check_error(httpx.get(f"{api_url}/v1/models/gpt-4o", timeout=10), 404, "model_not_found", None)


def test_the_openai_client_raises_typed_errors(api_url: str):
    client = openai.OpenAI(base_url=f"{api_url}/v1", api_key="none", max_retries=0, timeout=60)
    ask = client.chat.completions.create
    with pytest.raises(openai.NotFoundError) as info:
        ask(model="nope", messages=[USER])
    assert info.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as info:
        ask(model="yi-vl", messages=[image_message(URL_OK), image_message(URL_OK)])
    assert info.value.code == "too_many_images" and "one image" in info.value.message
    with pytest.raises(openai.BadRequestError):
        ask(model="yi-vl", messages=[image_message(data_url(b"GIF89a broken"))], stream=True)


def test_the_server_still_answers_after_every_error(api_url: str):
    for _, payload, *_ in BAD_REQUESTS:
        if isinstance(payload, bytes):
            headers = {"Content-Type": "application/json"}
            httpx.post(f"{api_url}/v1/chat/completions", content=payload, headers=headers, timeout=60)
        else:
            httpx.post(f"{api_url}/v1/chat/completions", json=payload, timeout=60)
    still_serves(api_url)
    image = body(messages=[image_message(data_url(base64.b64decode(URL_OK.split(",")[1])))])
    assert httpx.post(f"{api_url}/v1/chat/completions", json=image, timeout=60).status_code == 200

"""What a web page or a flood could do to a local API: JSON bodies only (415), the Host header checked
(DNS rebinding), CORS off unless configured, keys compared as bytes, bounded parsing (503) and images over
the pixel limit refused from their header."""

from __future__ import annotations

import dataclasses
import io
import json
import socket
import time
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from yivl.data.chat import Turn
from yivl.serving.api import create_app, request_pixels
from yivl.serving.api_errors import ApiError
from yivl.serving.api_guard import host_allowed
from yivl.serving.engine import Engine
from yivl.serving.openai_format import Conversation, ImageRef
from yivl.serving.prompt_bound import WINDOW_CHARS, check_text_fits
from yivl.serving.worker import GenerationWorker

from .conftest import api_settings
from .helpers import answered_on_one_connection, client_port, data_url, huge_gif, image_message, serve
from .test_api_errors import body, check_error

CHAT = "/v1/chat/completions"


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_only_json_bodies_are_read(api_url: str, content_type: str | None):
    headers = {} if content_type is None else {"Content-Type": content_type}
    with httpx.Client(timeout=60) as client:
        refused = client.post(
            f"{api_url}{CHAT}", content=httpx.Request("POST", "/", json=body()).content, headers=headers
        )
        error = check_error(refused, 415, "unsupported_media_type", None)
        assert "Content-Type: application/json" in error["message"]
        answered = client.post(
            f"{api_url}{CHAT}", json=body(), headers={"Content-Type": "application/json; charset=utf-8"}
        )
        assert answered.status_code == 200


def test_a_foreign_host_header_is_refused(api_url: str):
    with httpx.Client(timeout=60) as client:
        refused = client.get(f"{api_url}/v1/models", headers={"Host": "attacker.example:8000"})
        error = check_error(refused, 400, "invalid_host", None)
        assert "add it to api.allowed_hosts" in error["message"]
        port = api_url.rsplit(":", 1)[1]
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost"):
            assert client.get(f"{api_url}/v1/models", headers={"Host": host}).status_code == 200


def _http10_without_host(url: str, path: str) -> bytes:
    """An HTTP/1.0 GET with no Host header (HTTP/1.1 requires one, so the HTTP parser would refuse it
    first); the raw response."""
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_a_request_without_a_host_header_is_refused(api_url: str, engine: Engine, worker: GenerationWorker):
    head, _, payload = _http10_without_host(api_url, "/v1/models").partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), head
    error = json.loads(payload)["error"]
    assert error["code"] == "invalid_host" and "no Host header" in error["message"]
    with httpx.Client(timeout=60) as client:  # and the server goes on
        assert client.post(f"{api_url}{CHAT}", json=body()).status_code == 200
    with serve(create_app(engine, worker, api_settings(allowed_hosts=("*",)))) as url:
        assert _http10_without_host(url, "/v1/models").startswith(b"HTTP/1.1 200")


def test_two_content_types_are_refused(api_url: str):
    raw = httpx.Request("POST", "/", json=body()).content
    headers = [("Content-Type", "application/json"), ("Content-Type", "text/plain")]
    with httpx.Client(timeout=60) as client:
        refused = client.post(f"{api_url}{CHAT}", content=raw, headers=headers)
        error = check_error(refused, 415, "unsupported_media_type", None)
        assert error["message"] == (
            "the request has 2 Content-Type headers; send one: Content-Type: application/json"
        )
        answered = client.post(f"{api_url}{CHAT}", json=body())
        assert answered.status_code == 200
        assert client_port(answered) == client_port(refused), "the server closed the connection"


def test_every_401_asks_for_a_bearer_token(engine: Engine, worker: GenerationWorker):
    settings = api_settings(api_key="k", cors_origins=("https://app.example",))
    requests = [
        ("GET", "/v1/models", {}),
        ("GET", "/v1/models/yi-vl", {"Authorization": "Bearer wrong"}),
        ("GET", "/metrics", {"Authorization": "Basic k"}),
        ("POST", CHAT, {"Origin": "https://app.example"}),
        ("POST", CHAT, {"Authorization": "Bearer", "Content-Type": "text/plain"}),
    ]
    with serve(create_app(engine, worker, settings)) as url, httpx.Client(timeout=60) as client:
        for method, path, headers in requests:
            refused = client.request(method, f"{url}{path}", headers=headers)
            assert refused.status_code == 401, (method, path)
            assert refused.headers["www-authenticate"] == "Bearer", (method, path)
            assert refused.json()["error"]["code"] == "invalid_api_key"


def test_allowed_hosts_add_names(engine: Engine, worker: GenerationWorker):
    with serve(create_app(engine, worker, api_settings(allowed_hosts=("vl.internal",)))) as url:
        assert httpx.get(f"{url}/v1/models", headers={"Host": "vl.internal"}, timeout=10).status_code == 200
        assert (
            httpx.get(f"{url}/v1/models", headers={"Host": "other.internal"}, timeout=10).status_code == 400
        )


@pytest.mark.parametrize(
    ("header", "bind", "allowed", "ok"),
    [
        ("127.0.0.1:8000", "127.0.0.1", (), True),
        ("[::1]:8000", "127.0.0.1", (), True),
        ("localhost.", "127.0.0.1", (), True),
        ("192.168.1.5:8000", "127.0.0.1", (), False),
        ("192.168.1.5:8000", "0.0.0.0", (), True),
        ("192.168.1.5:8000", "192.168.1.5", (), True),
        ("rebind.attacker.example", "0.0.0.0", (), False),
        ("VL.Internal:80", "0.0.0.0", ("vl.internal",), True),
        ("anything", "127.0.0.1", ("*",), True),
        (None, "127.0.0.1", (), False),
        (None, "0.0.0.0", ("vl.internal",), False),
        (None, "127.0.0.1", ("*",), True),
    ],
)
def test_host_rules(header: str | None, bind: str, allowed: tuple[str, ...], ok: bool):
    assert host_allowed(header, bind, allowed) is ok


def test_cors_is_off_unless_configured(api_url: str, engine: Engine, worker: GenerationWorker):
    preflight = {
        "Origin": "https://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    off = httpx.options(f"{api_url}{CHAT}", headers=preflight, timeout=10)
    assert "access-control-allow-origin" not in off.headers
    plain = httpx.post(f"{api_url}{CHAT}", json=body(), headers={"Origin": "https://app.example"}, timeout=60)
    assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers
    with serve(create_app(engine, worker, api_settings(cors_origins=("https://app.example",)))) as url:
        on = httpx.options(f"{url}{CHAT}", headers=preflight, timeout=10)
        assert on.status_code == 200 and on.headers["access-control-allow-origin"] == "https://app.example"
        other = httpx.options(
            f"{url}{CHAT}", headers={**preflight, "Origin": "https://evil.example"}, timeout=10
        )
        assert "access-control-allow-origin" not in other.headers


def test_a_non_ascii_key_matches_its_utf8_bytes(engine: Engine, worker: GenerationWorker):
    key = "clé-秘密"
    with (
        serve(create_app(engine, worker, api_settings(api_key=key))) as url,
        httpx.Client(timeout=60) as client,
    ):
        good = {"Authorization": b"Bearer " + key.encode("utf-8")}
        assert client.get(f"{url}/v1/models", headers=good).status_code == 200
        for wrong in (b"Bearer " + key.encode("latin-1", "replace"), b"Bearer cl\xc3\xa9", b"Basic x"):
            refused = client.get(f"{url}/v1/models", headers={"Authorization": wrong})
            assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        assert client.post(f"{url}{CHAT}", json=body(), headers=good).status_code == 200


def test_requests_beyond_the_parsing_slots_get_503(engine: Engine, worker: GenerationWorker):
    """One slot: a client that sends half its body holds it; the next request is 503 at once, and once the
    first one finishes its body the server answers again."""
    with serve(create_app(engine, worker, api_settings(max_parsing=1))) as url:
        port = int(url.rsplit(":", 1)[1])
        payload = httpx.Request("POST", "/", json=body()).content
        head = f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        with socket.create_connection(("127.0.0.1", port), timeout=30) as slow:
            slow.sendall(f"{head}Content-Length: {len(payload)}\r\n\r\n".encode() + payload[:10])
            time.sleep(0.3)
            with httpx.Client(timeout=30) as client:
                busy = client.post(f"{url}{CHAT}", json=body())
                error = check_error(busy, 503, "server_busy", None)
                assert (
                    error["message"]
                    == "1 requests are already being read; try again in a moment (api.max_queue)"
                )
                assert busy.headers["Retry-After"] == "1"
                slow.sendall(payload[10:])
                assert slow.recv(12) == b"HTTP/1.1 200"
                assert client.post(f"{url}{CHAT}", json=body()).status_code == 200


def test_an_image_over_the_pixel_limit_is_refused_from_its_header(api_url: str):
    gif = huge_gif(8000)  # 64 megapixels; the test server takes 4
    with Image.open(io.BytesIO(gif)) as img:
        assert img.size == (8000, 8000)
    with httpx.Client(timeout=60) as client:
        start = time.monotonic()
        refused = answered_on_one_connection(
            client, api_url, body(messages=[image_message(data_url(gif, "image/gif"))]), body()
        )
    error = check_error(refused, 400, "invalid_image", None)
    assert "8000x8000 = 64000000 pixels, over the limit of 4000000" in error["message"]
    assert time.monotonic() - start < 10


class CountingTokenizer:
    """One token per four characters; remembers how many characters it was given."""

    def __init__(self) -> None:
        self.chars = 0

    def encode(self, text: str) -> list[int]:
        self.chars += len(text)
        return [5] * (len(text) // 4)


def test_a_huge_message_is_refused_after_tokenizing_a_bounded_part():
    tokenizer = CountingTokenizer()
    engine = SimpleNamespace(tokenizer=tokenizer, context_length=4096)
    with pytest.raises(ApiError) as info:
        check_text_fits(engine, Conversation([Turn("human", "x" * 29_000_000)]))
    assert info.value.code == "context_length_exceeded" and "over 8192 tokens" in info.value.message
    assert tokenizer.chars <= 2 * 4096 * 4 + WINDOW_CHARS  # not the 29 MB
    check_text_fits(engine, Conversation([Turn("human", "x" * 30_000)]))  # fits: the exact count decides


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P"])
def test_a_queued_image_is_kept_as_model_pixels(engine: Engine, mode: str):
    noise = np.random.default_rng(0).integers(0, 256, (600, 1000, 4), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise, "RGBA").convert(mode).save(buf, format="PNG")
    ref = ImageRef(data_url(buf.getvalue()), "messages[0].content[1].image_url")
    settings = api_settings()
    settings.images = dataclasses.replace(settings.images, max_image_bytes=10_000_000)  # noise: 2 MB
    queued = request_pixels(engine, ref, settings)
    side = engine.image_processor.size
    assert queued.shape == (3, side, side) and queued.dtype == torch.float32
    assert torch.equal(engine.pixels(queued), engine.pixels(buf.getvalue()))

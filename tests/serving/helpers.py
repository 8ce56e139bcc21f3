"""Test helpers: servers on 127.0.0.1 with a free port, stand-in and wrapping engines, data URLs."""

from __future__ import annotations

import base64
import io
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI
from PIL import Image

from yivl.models.generation import Generation, GenerationSettings
from yivl.serving.engine import Request

START_TIMEOUT_S = 20.0


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run ``app`` with uvicorn in a thread on 127.0.0.1 (a free port); yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def png_bytes(size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image_message(url: str, text: str = "What is in the image?") -> dict:
    return {
        "role": "user",
        "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}],
    }


class SlowEngine:
    """Wraps an engine so every streamed piece takes ``delay`` seconds (makes streaming observable)."""

    def __init__(self, engine: object, delay: float) -> None:
        self.engine = engine
        self.delay = delay

    def __getattr__(self, name: str) -> object:
        return getattr(self.engine, name)

    def generate_full(
        self, requests: Sequence[Request], settings: GenerationSettings, on_text: Callable | None = None
    ) -> list[Generation]:
        def slow(i: int, delta: str) -> None:
            time.sleep(self.delay)
            if on_text is not None:
                on_text(i, delta)

        return self.engine.generate_full(requests, settings, on_text=slow)


class RecordingEngine:
    """Wraps an engine and keeps every request the worker hands it (to see what the API built)."""

    def __init__(self, engine: object) -> None:
        self.engine = engine
        self.requests: list[Request] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.engine, name)

    def generate_full(
        self, requests: Sequence[Request], settings: GenerationSettings, on_text: Callable | None = None
    ) -> list[Generation]:
        self.requests.extend(requests)
        return self.engine.generate_full(requests, settings, on_text=on_text)


class ScriptedEngine:
    """A stand-in engine: answers ``words`` one by one (``delay`` s apart) and records overlapping calls."""

    def __init__(
        self, words: Sequence[str] = ("a", " b", " c"), delay: float = 0.0, fail: Exception | None = None
    ):
        self.words = list(words)
        self.delay = delay
        self.fail = fail
        self.active = 0
        self.max_active = 0
        self.calls = 0
        self.finished = 0
        self._lock = threading.Lock()

    def generate_full(
        self, requests: Sequence[Request], settings: GenerationSettings, on_text: Callable | None = None
    ) -> list[Generation]:
        with self._lock:
            self.active += 1
            self.calls += 1
            self.max_active = max(self.max_active, self.active)
        try:
            if self.fail is not None:
                raise self.fail
            for word in self.words:
                time.sleep(self.delay)
                for i in range(len(requests)):
                    if on_text is not None:
                        on_text(i, word)
            self.finished += 1
            return [Generation("".join(self.words), len(self.words), "stop") for _ in requests]
        finally:
            with self._lock:
                self.active -= 1


def client_port(response: object) -> int:
    """The client-side port of the connection an httpx response came on (same port: same connection)."""
    return response.extensions["network_stream"].get_extra_info("client_addr")[1]


def answered_on_one_connection(client: object, url: str, bad: dict | bytes, good: dict) -> object:
    """POST ``bad`` then ``good`` on one keep-alive httpx client; the bad response, after checking the good
    one came back 200 on the same connection."""
    kwargs = (
        {"content": bad, "headers": {"Content-Type": "application/json"}} if isinstance(bad, bytes) else {}
    )
    refused = client.post(f"{url}/v1/chat/completions", **(kwargs or {"json": bad}))
    answered = client.post(f"{url}/v1/chat/completions", json=good)
    assert answered.status_code == 200, answered.text
    assert client_port(answered) == client_port(refused), "the server closed the connection"
    return refused

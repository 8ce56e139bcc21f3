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

from yivl.models.batch_decoder import Prompt
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
    """Wraps an engine so every decode step takes ``delay`` more seconds (makes streaming observable)."""

    def __init__(self, engine: object, delay: float) -> None:
        self.engine = engine
        self.delay = delay

    def __getattr__(self, name: str) -> object:
        return getattr(self.engine, name)

    def batch_decoder(self, images: object = None) -> object:
        return _SlowDecoder(self.engine.batch_decoder(images), self.delay)


class _SlowDecoder:
    """A batch decoder whose every step sleeps ``delay`` seconds first."""

    def __init__(self, decoder: object, delay: float) -> None:
        self.decoder = decoder
        self.delay = delay

    def __getattr__(self, name: str) -> object:
        return getattr(self.decoder, name)

    def step(self) -> list:
        time.sleep(self.delay)
        return self.decoder.step()


class RecordingEngine:
    """Wraps an engine and keeps every request the worker hands it (to see what the API built)."""

    def __init__(self, engine: object) -> None:
        self.engine = engine
        self.requests: list[Request] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.engine, name)

    def prompt(
        self,
        req: Request,
        settings: GenerationSettings,
        on_text: Callable | None = None,
        key_image: bool = False,
    ) -> Prompt:
        self.requests.append(req)
        return self.engine.prompt(req, settings, on_text, key_image)


class ScriptedEngine:
    """A stand-in engine for the worker: each row answers ``words`` one per decode step (``delay`` s
    apart). It counts rows started (``calls``), running (``active``) and run to their end (``finished``),
    the rows of each prefill group (``groups``), and the most threads ever inside its decoder at once
    (``max_concurrent_calls``: the worker's alone)."""

    def __init__(
        self, words: Sequence[str] = ("a", " b", " c"), delay: float = 0.0, fail: Exception | None = None
    ):
        self.words = list(words)
        self.delay = delay
        self.fail = fail  # raised when a request is made into a prompt
        self.active = 0
        self.calls = 0
        self.finished = 0
        self.groups: list[int] = []
        self.inside = 0
        self.max_concurrent_calls = 0
        self._lock = threading.Lock()

    def prompt(
        self,
        req: Request,
        settings: GenerationSettings,
        on_text: Callable | None = None,
        key_image: bool = False,
    ) -> Prompt:
        if self.fail is not None:
            raise self.fail
        return Prompt([], None, settings, on_text=on_text)

    def batch_decoder(self, images: object = None) -> ScriptedDecoder:
        return ScriptedDecoder(self)

    @contextmanager
    def entered(self) -> Iterator[None]:
        """Counts the threads inside the decoder at once."""
        with self._lock:
            self.inside += 1
            self.max_concurrent_calls = max(self.max_concurrent_calls, self.inside)
        try:
            yield
        finally:
            with self._lock:
                self.inside -= 1


class ScriptedRow:
    """One row of :class:`ScriptedDecoder`: its words so far."""

    def __init__(self, key: int, prompt: Prompt, words: list[str]) -> None:
        self.key = key
        self.on_text = prompt.on_text
        self.words = words
        self.sent = 0
        self.logprobs: list = []

    def result(self) -> Generation:
        return Generation("".join(self.words[: self.sent]), self.sent, "stop")


class ScriptedDecoder:
    """What the worker's batch needs from :class:`yivl.models.batch_decoder.BatchDecoder`, scripted."""

    def __init__(self, engine: ScriptedEngine) -> None:
        self.engine = engine
        self.rows: dict[int, ScriptedRow] = {}
        self._next_key = 0

    @property
    def size(self) -> int:
        return len(self.rows)

    def add(self, prompts: Sequence[Prompt]) -> list[ScriptedRow]:
        with self.engine.entered():
            rows = [ScriptedRow(self._next_key + i, p, self.engine.words) for i, p in enumerate(prompts)]
            self._next_key += len(rows)
            self.rows.update({r.key: r for r in rows})
            self.engine.calls += len(rows)
            self.engine.groups.append(len(rows))
            self.engine.active += len(rows)
            return rows

    def remove(self, keys: set[int]) -> None:
        for key in keys:
            if self.rows.pop(key, None) is not None:
                self.engine.active -= 1

    def step(self) -> list[ScriptedRow]:
        with self.engine.entered():
            time.sleep(self.delay)
            finished = []
            for row in list(self.rows.values()):
                if row.sent < len(row.words):
                    if row.on_text is not None:
                        row.on_text(row.words[row.sent])
                    row.sent += 1
                if row.sent == len(row.words):
                    self.engine.finished += 1
                    self.engine.active -= 1
                    finished.append(self.rows.pop(row.key))
            return finished

    @property
    def delay(self) -> float:
        return self.engine.delay


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


def huge_gif(side: int) -> bytes:
    """A GIF of a few dozen bytes whose header says ``side`` x ``side`` pixels."""
    buf = io.BytesIO()
    Image.new("P", (1, 1)).save(buf, format="GIF")
    data = bytearray(buf.getvalue())
    data[6:10] = side.to_bytes(2, "little") * 2  # the logical screen size
    return bytes(data)

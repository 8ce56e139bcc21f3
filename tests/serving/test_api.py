"""The OpenAI-compatible API driven by the official ``openai`` client against a live server (tiny model)."""

from __future__ import annotations

import http.server
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from yivl.data.chat import Turn
from yivl.models.generation import GenerationSettings
from yivl.serving.api import create_app
from yivl.serving.engine import Engine, Request
from yivl.serving.worker import GenerationWorker

from .conftest import api_settings
from .helpers import ScriptedEngine, SlowEngine, data_url, image_message, png_bytes, serve

ASSET = Path(__file__).resolve().parents[2] / "assets" / "shapes.png"
GREEDY = {"temperature": 0, "max_tokens": 12}


def client(url: str, key: str = "none") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)


def direct(engine: Engine, turns: list[Turn], image: object = None, max_new_tokens: int = 12) -> str:
    """The answer of calling the engine in-process, greedy: what the API must return."""
    settings = GenerationSettings(temperature=0, max_new_tokens=max_new_tokens)
    return engine.generate([Request(turns, image)], settings)[0]


def test_lists_the_served_model(api_url: str):
    assert [m.id for m in client(api_url).models.list()] == ["yi-vl"]
    assert client(api_url).models.retrieve("yi-vl").id == "yi-vl"


def test_text_only_completion_equals_the_engine(api_url: str, engine: Engine):
    reply = client(api_url).chat.completions.create(
        model="yi-vl", messages=[{"role": "user", "content": "Hello there"}], **GREEDY
    )
    assert reply.choices[0].message.content == direct(engine, [Turn("human", "Hello there")])
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 0 and reply.usage.total_tokens >= reply.usage.prompt_tokens


def test_image_in_a_data_url_is_seen_padded_like_the_engine(api_url: str, engine: Engine):
    url = data_url(ASSET.read_bytes())
    reply = client(api_url).chat.completions.create(
        model="yi-vl", messages=[image_message(url, "Which shapes?")], **GREEDY
    )
    expected = direct(engine, [Turn("human", "Which shapes?")], ASSET)
    assert reply.choices[0].message.content == expected
    assert expected != direct(engine, [Turn("human", "Which shapes?")])  # the image changed the answer
    # 64 image features replace the placeholder in the prompt count
    assert reply.usage.prompt_tokens == engine.prompt_length(
        engine.prompt_ids([Turn("human", "Which shapes?")], True)
    )


def test_file_url_gives_the_same_answer_as_a_data_url(api_url: str):
    ask = client(api_url).chat.completions.create
    by_data = ask(model="yi-vl", messages=[image_message(data_url(ASSET.read_bytes()))], **GREEDY)
    by_file = ask(model="yi-vl", messages=[image_message(ASSET.as_uri())], **GREEDY)
    assert by_file.choices[0].message.content == by_data.choices[0].message.content


def test_multi_turn_history_is_rendered_like_the_engine(api_url: str, engine: Engine):
    messages = [
        {"role": "user", "content": "First question"},
        {"role": "assistant", "content": "First answer"},
        {"role": "user", "content": "Second question"},
    ]
    reply = client(api_url).chat.completions.create(model="yi-vl", messages=messages, **GREEDY)
    turns = [
        Turn("human", "First question"),
        Turn("assistant", "First answer"),
        Turn("human", "Second question"),
    ]
    assert reply.choices[0].message.content == direct(engine, turns)


def test_streamed_chunks_add_up_to_the_plain_answer(api_url: str):
    ask = client(api_url).chat.completions.create
    messages = [image_message(data_url(ASSET.read_bytes()))]
    plain = ask(model="yi-vl", messages=messages, **GREEDY).choices[0].message.content
    chunks = list(
        ask(model="yi-vl", messages=messages, stream=True, stream_options={"include_usage": True}, **GREEDY)
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(pieces) == plain
    finished = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finished in (["stop"], ["length"])
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_answers_arrive_piece_by_piece(engine: Engine):
    worker = GenerationWorker(SlowEngine(engine, delay=0.03))
    try:
        with serve(create_app(engine, worker, api_settings())) as url:
            stream = client(url).chat.completions.create(
                model="yi-vl", messages=[{"role": "user", "content": "Hi"}], stream=True, **GREEDY
            )
            arrivals = [(time.monotonic(), c.choices[0].delta.content) for c in stream if c.choices]
    finally:
        worker.close()
    texts = [t for _, t in arrivals if t]
    assert len(texts) >= 4, f"the answer was not streamed: {texts}"
    assert arrivals[-1][0] - arrivals[1][0] > 0.1  # spread over the generation, not sent at the end


def test_raw_event_stream_is_openai_sse_ending_with_done(api_url: str):
    body = {"model": "yi-vl", "messages": [{"role": "user", "content": "Hi"}], "stream": True, **GREEDY}
    with httpx.stream("POST", f"{api_url}/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]" and lines.count("data: [DONE]") == 1


def test_stop_strings_cut_the_answer(api_url: str):
    ask = client(api_url).chat.completions.create
    messages = [{"role": "user", "content": "Tell me more"}]
    full = ask(model="yi-vl", messages=messages, temperature=0, max_tokens=24).choices[0].message.content
    stop = full.strip()[4:7]
    assert stop.strip(), f"pick a stop string from the answer {full!r}"
    cut = ask(model="yi-vl", messages=messages, temperature=0, max_tokens=24, stop=[stop]).choices[0]
    assert cut.message.content == full[: full.index(stop)].strip()
    assert cut.finish_reason == "stop"


def test_n_choices_and_seeded_sampling(api_url: str):
    ask = client(api_url).chat.completions.create
    kwargs = {"model": "yi-vl", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}
    reply = ask(n=2, temperature=0, **kwargs)
    assert [c.index for c in reply.choices] == [0, 1]
    assert reply.choices[0].message.content == reply.choices[1].message.content
    first = ask(temperature=1.0, seed=7, **kwargs).choices[0].message.content
    assert ask(temperature=1.0, seed=7, **kwargs).choices[0].message.content == first


def test_concurrent_clients_get_uncorrupted_answers(api_url: str, engine: Engine):
    expected = direct(engine, [Turn("human", "Question 0")]), direct(engine, [Turn("human", "Question 1")])
    answers: dict[int, str] = {}

    def ask(i: int) -> None:
        stream = client(api_url).chat.completions.create(
            model="yi-vl", messages=[{"role": "user", "content": f"Question {i % 2}"}], stream=True, **GREEDY
        )
        answers[i] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert answers == {i: expected[i % 2] for i in range(4)}


def test_api_key_is_required_when_configured(engine: Engine, worker: GenerationWorker):
    with serve(create_app(engine, worker, api_settings(api_key="s3cret"))) as url:
        for key in ("none", "wrong"):
            with pytest.raises(openai.AuthenticationError) as info:
                client(url, key).models.list()
            assert info.value.code == "invalid_api_key"
        messages = [{"role": "user", "content": "Hi"}]
        assert (
            client(url, "s3cret").chat.completions.create(model="yi-vl", messages=messages, **GREEDY).choices
        )
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200


def test_remote_images_work_when_enabled(engine: Engine, worker: GenerationWorker):
    image_server = _serve_file(png_bytes())
    url = f"http://127.0.0.1:{image_server.server_port}/image.png"
    try:
        with serve(create_app(engine, worker, api_settings(allow_remote=True))) as api:
            reply = client(api).chat.completions.create(
                model="yi-vl", messages=[image_message(url)], **GREEDY
            )
            assert reply.choices[0].message.content is not None
    finally:
        image_server.shutdown()


def _serve_file(data: bytes) -> http.server.ThreadingHTTPServer:

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_client_that_hangs_up_mid_stream_frees_the_worker(engine: Engine):
    worker = GenerationWorker(SlowEngine(engine, delay=0.05))  # a 200-token answer would take 10 s
    body = {"model": "yi-vl", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    try:
        with serve(create_app(engine, worker, api_settings())) as url:
            with httpx.stream(
                "POST", f"{url}/v1/chat/completions", json={**body, "max_tokens": 200}
            ) as response:
                lines = response.iter_lines()
                for _ in range(3):
                    next(lines)
            start = time.monotonic()
            quick = httpx.post(
                f"{url}/v1/chat/completions", json={**body, "stream": False, "max_tokens": 2}, timeout=60
            )
            assert quick.status_code == 200
            assert time.monotonic() - start < 5, "the abandoned stream kept the worker busy"
    finally:
        worker.close()


def test_a_client_that_hangs_up_before_a_plain_answer_frees_the_worker(engine: Engine):
    slow = ScriptedEngine(words=["x"] * 200, delay=0.05)  # the whole answer would take 10 s
    worker = GenerationWorker(slow)
    body = {"model": "yi-vl", "messages": [{"role": "user", "content": "Hi"}], "stream": False}
    try:
        with serve(create_app(engine, worker, api_settings())) as url:
            with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes its connection
                httpx.post(f"{url}/v1/chat/completions", json={**body, "max_tokens": 200}, timeout=0.5)
            deadline = time.monotonic() + 5
            while slow.active and time.monotonic() < deadline:
                time.sleep(0.02)
            assert slow.active == 0, "the abandoned request kept the worker busy"
            assert slow.finished == 0, "the abandoned answer ran to its end"
            slow.words = ["y"]
            start = time.monotonic()
            quick = httpx.post(f"{url}/v1/chat/completions", json={**body, "max_tokens": 2}, timeout=60)
            assert quick.status_code == 200
            assert quick.json()["choices"][0]["message"]["content"] == "y"
            assert time.monotonic() - start < 5
    finally:
        worker.close()

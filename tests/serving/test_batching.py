"""Continuous batching in the worker: concurrent requests join one running batch and get exactly the
tokens they get alone (greedy), keep their own settings, budgets and cancellation."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import openai

from yivl.data.chat import Turn
from yivl.models.generation import GenerationSettings
from yivl.models.image_prefix import ImagePrefixCache
from yivl.serving import engine as engine_module
from yivl.serving.api import create_app
from yivl.serving.engine import Engine, Request
from yivl.serving.worker import EventStream, GenerationWorker

from .conftest import api_settings
from .helpers import data_url, image_message, serve

ASSET = Path(__file__).resolve().parents[2] / "assets" / "shapes.png"
QUESTIONS = ["Which shapes?", "Describe the colours in detail.", "Hi", "What is the biggest shape here?"]


def greedy(max_new_tokens: int) -> GenerationSettings:
    return GenerationSettings(temperature=0, max_new_tokens=max_new_tokens)


def _requests() -> list[tuple[Request, GenerationSettings]]:
    """Mixed prompts (two with the image), budgets and system prompts."""
    return [
        (Request([Turn("human", QUESTIONS[0])], ASSET), greedy(20)),
        (Request([Turn("human", QUESTIONS[1])]), greedy(7)),
        (Request([Turn("human", QUESTIONS[2])], system="You are terse."), greedy(13)),
        (Request([Turn("human", QUESTIONS[3])], ASSET), greedy(16)),
        (
            Request([Turn("human", QUESTIONS[1]), Turn("assistant", "Red."), Turn("human", "More?")]),
            greedy(9),
        ),
    ]


def _concurrently(worker: GenerationWorker, jobs: list[tuple[Request, GenerationSettings]]) -> list:
    """Submit every job at once (from threads) and return each one's final event."""
    finals: dict[int, object] = {}

    def run(i: int) -> None:
        request, settings = jobs[i]
        finals[i] = list(EventStream(worker, [request], settings, timeout=60))[-1]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    return [finals[i] for i in range(len(jobs))]


def test_concurrent_greedy_requests_get_their_solo_tokens(engine: Engine):
    jobs = _requests()
    solo = [engine.generate_full([r], s)[0] for r, s in jobs]
    kept = ImagePrefixCache()
    worker = GenerationWorker(engine, max_queue=8, max_batch_size=8, image_prefixes=kept)
    for _ in range(2):  # the second time, the image's prefix is kept: prefilled after it, same tokens
        finals = _concurrently(worker, jobs)
        assert [e.kind for e in finals] == ["done"] * len(jobs)
        assert [e.generations[0] for e in finals] == solo
    assert kept.hits >= 2 and len(kept) == 1  # one image, one system prompt before it
    assert worker.metrics.peak_running >= 2  # they did share the batch
    assert engine.prefixes.computed >= 1  # the release's system prompt is cached across requests
    worker.close()


def test_the_batch_never_grows_past_max_batch_size(engine: Engine):
    jobs = _requests()
    worker = GenerationWorker(engine, max_queue=8, max_batch_size=2)
    finals = _concurrently(worker, jobs)
    assert [e.generations[0] for e in finals] == [engine.generate_full([r], s)[0] for r, s in jobs]
    assert worker.metrics.peak_running == 2
    worker.close()


def test_seeded_sampling_is_the_same_alone_and_in_a_batch(engine: Engine):
    sampled = GenerationSettings(temperature=1.0, top_p=0.9, top_k=20, seed=11, max_new_tokens=12)
    request = Request([Turn("human", "Tell me a story.")])
    worker = GenerationWorker(engine, max_queue=8)
    alone = list(EventStream(worker, [request], sampled, timeout=60))[-1].generations
    jobs = [(request, sampled), *_requests()[:3]]
    together = _concurrently(worker, jobs)[0].generations
    assert together == alone
    assert alone[0].text != engine.generate_full([request], greedy(12))[0].text  # it did sample
    worker.close()


def test_a_cancelled_request_leaves_the_batch_and_the_others_finish(engine: Engine):
    long = (Request([Turn("human", QUESTIONS[1])]), greedy(400))
    short = (Request([Turn("human", QUESTIONS[0])], ASSET), greedy(30))
    worker = GenerationWorker(engine, max_queue=8, stream_interval_s=0)
    stream = iter(EventStream(worker, [long[0]], long[1], timeout=60))
    assert next(stream).kind == "text"
    other = EventStream(worker, [short[0]], short[1], timeout=60)
    stream.close()  # the first client goes away while the second one runs
    assert list(other)[-1].generations == engine.generate_full([short[0]], short[1])
    assert worker.metrics.running == 0 and worker.metrics.requests == 2
    worker.close()


def test_n_choices_beyond_the_batch_size_run_when_the_batch_is_empty(engine: Engine):
    request, settings = _requests()[1]
    worker = GenerationWorker(engine, max_queue=8, max_batch_size=2)
    final = list(EventStream(worker, [request] * 3, settings, timeout=60))[-1]
    assert final.generations == engine.generate_full([request], settings) * 3
    worker.close()


def test_a_request_that_cannot_start_fails_alone(engine: Engine):
    worker = GenerationWorker(engine, max_queue=8)
    bad = (Request([Turn("human", "x " * 5000)]), greedy(5))
    good = _requests()[2]
    finals = _concurrently(worker, [bad, good])
    assert finals[0].kind == "error" and "context is" in str(finals[0].error)
    assert finals[1].generations == engine.generate_full([good[0]], good[1])
    worker.close()


def _ask_http(url: str, i: int) -> str:
    body = {
        "model": "yi-vl",
        "messages": [image_message(data_url(ASSET.read_bytes()), QUESTIONS[i % 4])],
        "max_tokens": 10 + i,
        "temperature": 0,
    }
    reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    return reply.json()["choices"][0]["message"]["content"]


def _ask_openai(url: str, i: int) -> str:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=60)
    stream = client.chat.completions.create(
        model="yi-vl",
        messages=[{"role": "user", "content": QUESTIONS[i % 4]}],
        max_tokens=10 + i,
        temperature=0,
        stream=True,
    )
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_concurrent_api_clients_get_the_answers_they_get_one_at_a_time(engine: Engine):
    without = GenerationWorker(engine, max_queue=16, max_batch_size=8)
    with serve(create_app(engine, without, api_settings())) as url:
        uncached = [_ask_http(url, i) for i in range(4)]
    without.close()
    worker = GenerationWorker(engine, max_queue=16, max_batch_size=8, image_prefixes=ImagePrefixCache())
    calls = [(_ask_http, i) for i in range(4)] + [(_ask_openai, i) for i in range(4)]
    with serve(create_app(engine, worker, api_settings())) as url:
        sequential = [ask(url, i) for ask, i in calls]
        together: dict[int, str] = {}

        def run(k: int) -> None:
            ask, i = calls[k]
            together[k] = ask(url, i)

        threads = [threading.Thread(target=run, args=(k,)) for k in range(len(calls))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
    assert [together[k] for k in range(len(calls))] == sequential
    assert sequential[:4] == uncached  # the kept image prefix changes no token
    assert all(sequential) and worker.metrics.peak_running >= 2
    assert "yivl_image_prefix_cache_hits_total 7" in metrics  # 8 image requests, the first one kept it
    worker.close()


def test_a_job_without_requests_is_answered_at_once(engine: Engine):
    worker = GenerationWorker(engine, max_queue=8)
    events = list(EventStream(worker, [], greedy(5), timeout=10))
    assert [(e.kind, e.generations) for e in events] == [("done", [])]
    worker.close()


def test_a_job_cancelled_while_it_waits_still_gets_its_last_event(engine: Engine):
    long = (Request([Turn("human", QUESTIONS[1])]), greedy(200))
    worker = GenerationWorker(engine, max_queue=8, max_batch_size=1, stream_interval_s=0)
    running = iter(EventStream(worker, [long[0]], long[1], timeout=60))
    assert next(running).kind == "text"
    waiting = EventStream(worker, [long[0]], long[1], timeout=60)  # the batch is full: it waits
    waiting.job.cancel()
    running.close()
    events = list(waiting)  # ends with the worker's event, not at the 60 s timeout
    assert [e.kind for e in events] == ["error"] and str(events[0].error) == "cancelled before it started"
    worker.close()


def test_images_are_hashed_only_for_a_worker_that_keeps_image_prefixes(engine: Engine, monkeypatch):
    hashed: list[object] = []
    real = engine_module.pixel_key
    monkeypatch.setattr(engine_module, "pixel_key", lambda t: hashed.append(t) or real(t))
    job = [(Request([Turn("human", QUESTIONS[0])], ASSET), greedy(3))]
    for images, expected in ((None, 0), (ImagePrefixCache(max_entries=0), 0), (ImagePrefixCache(), 1)):
        worker = GenerationWorker(engine, max_queue=8, image_prefixes=images)
        assert worker.keeps_image_prefixes == bool(expected)
        assert _concurrently(worker, job)[0].kind == "done"
        assert len(hashed) == expected
        worker.close()

"""The generation worker: one thread on the model, events in order, cancellation, a bounded queue."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from yivl.data.chat import Turn
from yivl.errors import YivlError
from yivl.models.generation import Generation, GenerationSettings
from yivl.serving.engine import Request
from yivl.serving.worker import AsyncEventStream, EventStream, GenerationWorker, WorkerBusy

from .helpers import ScriptedEngine

REQUEST = [Request([Turn("human", "hi")])]
SETTINGS = GenerationSettings(max_new_tokens=8)


def test_events_stream_the_answer_then_done():
    worker = GenerationWorker(ScriptedEngine(["Hel", "lo", "!"], delay=0.05))
    events = list(EventStream(worker, REQUEST, SETTINGS, timeout=5))
    assert [e.delta for e in events if e.kind == "text"] == ["Hel", "lo", "!"]
    assert events[-1].kind == "done" and events[-1].answers == ["Hello!"]
    assert events[-1].generations == [Generation("Hello!", 3, "stop")]  # counts and reason reach the API
    worker.close()


def test_text_that_piles_up_behind_a_slow_consumer_comes_as_one_event():
    worker = GenerationWorker(ScriptedEngine(["a", "b", "c", "d"], delay=0.0))
    stream = EventStream(worker, REQUEST, SETTINGS, timeout=5)
    time.sleep(0.5)  # the whole answer is generated before the first read
    events = list(stream)
    assert [(e.kind, e.delta) for e in events] == [("text", "abcd"), ("done", "")]
    worker.close()


def test_concurrent_jobs_never_touch_the_model_at_once_and_keep_their_own_text():
    engine = ScriptedEngine(["x"] * 5, delay=0.002)
    worker = GenerationWorker(engine, max_queue=8)
    results: list[str] = []

    def client() -> None:
        results.append("".join(e.delta for e in EventStream(worker, REQUEST, SETTINGS, timeout=10)))

    threads = [threading.Thread(target=client) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert engine.max_concurrent_calls == 1 and engine.calls == 6
    assert results == ["xxxxx"] * 6
    worker.close()


def test_a_consumer_that_stops_early_cancels_its_job():
    engine = ScriptedEngine(["w"] * 200, delay=0.01)
    worker = GenerationWorker(engine)
    stream = iter(EventStream(worker, REQUEST, SETTINGS, timeout=10))
    assert next(stream).kind == "text"
    stream.close()  # the client went away
    engine.words = ["quick"]
    start = time.monotonic()
    events = list(EventStream(worker, REQUEST, SETTINGS, timeout=10))
    assert events[-1].kind == "done"
    assert time.monotonic() - start < 1.5, "the abandoned 2-second job was not cancelled"
    assert engine.finished == 1
    worker.close()


def test_errors_reach_the_consumer_and_the_worker_survives():
    engine = ScriptedEngine(fail=YivlError("bad question"))
    worker = GenerationWorker(engine)
    events = list(EventStream(worker, REQUEST, SETTINGS, timeout=5))
    assert events[-1].kind == "error" and str(events[-1].error) == "bad question"
    engine.fail = RuntimeError("a bug")
    assert list(EventStream(worker, REQUEST, SETTINGS, timeout=5))[-1].kind == "error"
    engine.fail = None
    assert list(EventStream(worker, REQUEST, SETTINGS, timeout=5))[-1].kind == "done"
    worker.close()


def test_a_full_queue_refuses_new_jobs():
    worker = GenerationWorker(ScriptedEngine(["w"] * 100, delay=0.01), max_queue=1, max_batch_size=1)
    running = iter(EventStream(worker, REQUEST, SETTINGS, timeout=10))
    next(running)  # job 1 runs (the batch is full)
    waiting = EventStream(worker, REQUEST, SETTINGS, timeout=10)  # job 2 waits
    with pytest.raises(WorkerBusy):
        EventStream(worker, REQUEST, SETTINGS, timeout=10)
    running.close()
    waiting.job.cancel()
    worker.close()


def test_a_job_cancelled_while_it_waits_still_gets_its_last_event():
    worker = GenerationWorker(ScriptedEngine(["w"] * 100, delay=0.01), max_queue=2, max_batch_size=1)
    running = iter(EventStream(worker, REQUEST, SETTINGS, timeout=10))
    next(running)
    waiting = EventStream(worker, REQUEST, SETTINGS, timeout=10)
    waiting.job.cancel()
    running.close()
    events = list(waiting)  # ends with the worker's event, not at the 10 s timeout
    assert [e.kind for e in events] == ["error"] and str(events[0].error) == "cancelled before it started"
    worker.close()


def test_timeout_ends_the_stream_with_an_error():
    worker = GenerationWorker(ScriptedEngine(["w"] * 100, delay=0.05))
    events = list(EventStream(worker, REQUEST, SETTINGS, timeout=0.2))
    assert isinstance(events[-1].error, TimeoutError)
    worker.close()


def test_async_stream_delivers_the_same_events():
    worker = GenerationWorker(ScriptedEngine(["a", "b"], delay=0.05))

    async def consume() -> list[str]:
        return [e.kind + e.delta async for e in AsyncEventStream(worker, REQUEST, SETTINGS, timeout=5)]

    assert asyncio.run(consume()) == ["texta", "textb", "done"]
    worker.close()


def test_fast_text_is_sent_in_bunches_but_the_first_piece_at_once():
    words = [f"{i} " for i in range(50)]
    worker = GenerationWorker(ScriptedEngine(words, delay=0.02), stream_interval_s=10.0)
    start = time.monotonic()
    stream = iter(EventStream(worker, REQUEST, SETTINGS, timeout=5))
    first = next(stream)
    assert first.delta.startswith("0 ") and time.monotonic() - start < 0.5  # not held back
    texts = [first.delta] + [e.delta for e in stream if e.kind == "text"]
    assert "".join(texts) == "".join(words) and len(texts) <= 2
    worker.close()

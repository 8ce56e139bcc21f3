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


def test_an_idle_worker_prefills_requests_still_arriving_together_with_the_first():
    engine = ScriptedEngine(["a", "b"])
    worker = GenerationWorker(engine, max_batch_size=8, batch_wait_s=30.0)  # bounded by the arrivals here
    arrivals = [worker.arriving() for _ in range(3)]
    streams = [EventStream(worker, REQUEST, SETTINGS, timeout=20)]  # announced by nobody: not waited for
    with arrivals[0] as first:
        streams.append(EventStream(worker, REQUEST, SETTINGS, timeout=20, arrival=first))
    time.sleep(0.2)  # the worker holds the first two jobs while two requests are still being parsed
    for arrival in arrivals[1:]:
        with arrival:
            streams.append(EventStream(worker, REQUEST, SETTINGS, timeout=20, arrival=arrival))
    finals = [list(s)[-1].kind for s in streams]
    assert finals == ["done"] * 4
    assert engine.groups == [4]  # one prefill group, not the first alone and the rest later
    worker.close()


def test_a_burst_is_prefilled_in_groups_of_max_prefill_rows_that_all_finish():
    engine = ScriptedEngine(["a", "b", "c"])
    worker = GenerationWorker(engine, max_batch_size=8, batch_wait_s=30.0, max_prefill_rows=2)
    arrivals = [worker.arriving() for _ in range(5)]
    streams = []
    for arrival in arrivals:
        with arrival:
            streams.append(EventStream(worker, REQUEST, SETTINGS, timeout=20, arrival=arrival))
    assert [list(s)[-1].answers for s in streams] == [["abc"]] * 5
    assert engine.groups == [2, 2, 1]  # the rest join at the next steps, in arrival order
    worker.close()


def test_a_job_with_more_choices_than_max_prefill_rows_is_prefilled_alone():
    engine = ScriptedEngine(["a"])
    worker = GenerationWorker(engine, max_batch_size=8, batch_wait_s=30.0, max_prefill_rows=2)
    with worker.arriving() as first, worker.arriving() as second:
        three = EventStream(worker, REQUEST * 3, SETTINGS, timeout=20, arrival=first)
        one = EventStream(worker, REQUEST, SETTINGS, timeout=20, arrival=second)
    assert [list(s)[-1].answers for s in (three, one)] == [["a"] * 3, ["a"]]
    assert engine.groups == [3, 1]
    worker.close()


def test_max_prefill_rows_must_be_positive():
    with pytest.raises(YivlError, match="max_prefill_rows"):
        GenerationWorker(ScriptedEngine(), max_prefill_rows=0)


def test_a_request_that_fails_while_arriving_does_not_hold_the_batch_back():
    engine = ScriptedEngine(["a"])
    worker = GenerationWorker(engine, batch_wait_s=600.0)
    with worker.arriving():  # parsed, refused (say HTTP 400), never submitted
        stream = EventStream(worker, REQUEST, SETTINGS, timeout=20)
        time.sleep(0.1)
    assert list(stream)[-1].kind == "done"  # well before batch_wait_s
    assert engine.groups == [1]
    worker.close()


def test_no_wait_without_arrivals_and_none_while_the_batch_runs():
    engine = ScriptedEngine(["w"] * 30, delay=0.01)
    worker = GenerationWorker(engine, max_batch_size=8, batch_wait_s=600.0)
    first = EventStream(worker, REQUEST, SETTINGS, timeout=20)  # nothing announced: starts at once
    while not engine.groups:
        time.sleep(0.005)
    with worker.arriving():  # the batch is running: newcomers join at the next step, no waiting
        second = EventStream(worker, REQUEST, SETTINGS, timeout=20)
        assert list(second)[-1].kind == "done"
    assert list(first)[-1].kind == "done"
    assert engine.groups == [1, 1]
    worker.close()


def test_batch_wait_must_not_be_negative():
    with pytest.raises(YivlError, match="batch_wait_s"):
        GenerationWorker(ScriptedEngine(), batch_wait_s=-1)

"""The web demo's logic without a browser: images, streamed turns, failures, slider settings."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import pytest

from yivl.data.chat import Turn
from yivl.errors import YivlError
from yivl.models.generation import GenerationSettings
from yivl.models.image_prefix import ImagePrefixCache
from yivl.serving.engine import Engine, Request
from yivl.serving.web_session import (
    Answering,
    Session,
    generation_settings,
    last_question,
    new_image,
    respond,
)
from yivl.serving.worker import GenerationWorker

from .helpers import ScriptedEngine, png_bytes

ASSET = Path(__file__).resolve().parents[2] / "assets" / "shapes.png"
GREEDY = GenerationSettings(temperature=0, max_new_tokens=10)


def test_a_new_image_starts_an_empty_session(tmp_path: Path):
    session, status = new_image(ASSET, max_pixels=10**7, max_bytes=10**6)
    assert session.turns == [] and session.image is not None and session.image.mode == "RGB"
    assert session.image.size == (320, 240)  # kept as uploaded: padding happens in the engine, no shrinking
    assert "New image" in status


@pytest.mark.parametrize(
    ("content", "max_bytes", "max_pixels", "says"),
    [
        (b"this is text", 10**6, 10**7, "Could not use upload.png"),
        (png_bytes()[:30], 10**6, 10**7, "Could not use upload.png"),
        (png_bytes(), 10, 10**7, "limit"),
        (png_bytes((400, 400)), 10**6, 1000, "Could not use upload.png"),
    ],
    ids=["not an image", "truncated", "too many bytes", "too many pixels"],
)
def test_bad_uploads_give_a_message_and_no_image(tmp_path, content, max_bytes, max_pixels, says):
    path = tmp_path / "upload.png"
    path.write_bytes(content)
    session, status = new_image(path, max_pixels=max_pixels, max_bytes=max_bytes)
    assert session.image is None and status.startswith("⚠️") and says in status
    assert str(tmp_path) not in status  # the user's file name, not the server's path


def test_no_image_is_a_text_only_session():
    session, status = new_image(None, max_pixels=10**7, max_bytes=10**6)
    assert session.image is None and "text-only" in status


def test_respond_streams_then_records_the_turn():
    worker = GenerationWorker(ScriptedEngine(["It ", "is ", "red."], delay=0.05))
    updates = list(respond(worker, Session(), "  What colour?  ", GREEDY, timeout=10))
    shown = [u.messages[-1]["content"] for u in updates]
    assert shown[0] == "" and shown[-1] == "It is red." and len(set(shown)) >= 3
    assert all(b.startswith(a) for a, b in itertools.pairwise(shown))  # it only grows
    final = updates[-1].session
    assert final.turns == [Turn("human", "What colour?"), Turn("assistant", "It is red.")]
    assert all(u.question == "" for u in updates) and updates[-1].status == ""
    worker.close()


def test_a_failed_answer_keeps_the_session_and_the_question():
    worker = GenerationWorker(ScriptedEngine(fail=YivlError("the prompt is too long")))
    before = Session([Turn("human", "a"), Turn("assistant", "b")])
    last = list(respond(worker, before, "next?", GREEDY, timeout=10))[-1]
    assert last.session is before and last.messages == before.messages()
    assert last.question == "next?" and "too long" in last.status
    worker.close()


def test_an_empty_question_is_not_sent():
    worker = GenerationWorker(ScriptedEngine())
    (update,) = respond(worker, Session(), "   ", GREEDY, timeout=10)
    assert "Type a question" in update.status and worker.engine.calls == 0
    worker.close()


def test_follow_ups_use_the_history_and_the_image_like_the_engine(engine: Engine, worker: GenerationWorker):
    session, _ = new_image(ASSET, max_pixels=10**7, max_bytes=10**6)
    for question in ("What is there?", "And the colours?"):
        session = list(respond(worker, session, question, GREEDY, timeout=60))[-1].session
    turns = session.turns
    assert [t.role for t in turns] == ["human", "assistant", "human", "assistant"]
    expected = engine.generate([Request(turns[:3], ASSET)], GREEDY)[0]
    assert turns[3].text == expected


def test_slider_values_become_settings():
    settings = generation_settings(0.0, 1.0, 64.0)
    assert (settings.temperature, settings.top_p, settings.max_new_tokens) == (0.0, None, 64)
    assert generation_settings(0.2, 0.7, 512).top_p == 0.7


def test_stop_ends_the_answer_at_once_and_keeps_the_part_shown():
    engine = ScriptedEngine(["It ", "is ", "red ", "and ", "round."], delay=0.2)
    worker = GenerationWorker(engine)
    answering = Answering()
    updates = []
    for update in respond(worker, Session(), "What colour?", GREEDY, timeout=30, answering=answering):
        updates.append(update)
        if update.messages[-1]["content"] == "It ":
            assert answering.stop()
    last = updates[-1]
    assert last.status == "Stopped." and last.question == ""
    assert last.session.turns == [Turn("human", "What colour?"), Turn("assistant", "It ")]
    assert answering.job is None and not answering.stop()  # nothing streams any more
    worker.close()
    assert engine.finished == 0  # the generation was cancelled, not run to its end


def test_stop_before_the_answer_begins_puts_the_question_back():
    engine = ScriptedEngine(["a"] * 20, delay=0.1)
    worker = GenerationWorker(engine, max_batch_size=1)  # the job ahead fills the batch
    worker.submit([Request([Turn("human", "ahead")])], GREEDY, lambda _event: None)  # busy for 2 s
    answering = Answering()
    updates = []
    for update in respond(worker, Session(), "mine?", GREEDY, timeout=30, answering=answering):
        updates.append(update)
        answering.stop()  # while it still waits in the queue
    assert engine.finished == 0  # it ended without waiting for the job ahead
    assert updates[-1].status == "⚠️ No answer: stopped" and updates[-1].question == "mine?"
    assert updates[-1].session.turns == []
    worker.close()
    assert engine.calls == 1  # the stopped job never ran


def test_regenerate_takes_back_the_last_exchange():
    session = Session(
        [Turn("human", "a"), Turn("assistant", "b"), Turn("human", "c"), Turn("assistant", "d")]
    )
    earlier, question = last_question(session)
    assert earlier.turns == session.turns[:2] and question == "c"
    with pytest.raises(YivlError, match=r"^nothing to regenerate yet: ask a question first$"):
        last_question(Session())


def test_each_tab_gets_its_own_answering_state():
    first = Answering()
    first.job = object()  # type: ignore[assignment]
    assert copy.deepcopy(first).job is None


def test_the_demo_lets_max_batch_size_answers_reach_the_worker_at_once(worker: GenerationWorker):
    from yivl.serving import web

    demo = web.build_demo(worker, web.WebSettings(concurrent_answers=3))
    limits = {fn.concurrency_limit for fn in demo.fns.values() if fn.concurrency_id == "generate"}
    assert limits == {3}  # Ask and Regenerate share one limit, so the worker can batch three tabs


def test_a_sessions_image_is_made_once_and_later_turns_use_its_kept_prefix(engine: Engine):
    kept = ImagePrefixCache()
    worker = GenerationWorker(engine, image_prefixes=kept)
    session, _ = new_image(ASSET, 10**8, 10**8)
    sent = []
    for question in ("What shapes?", "Which colour is the biggest?"):
        session = list(respond(worker, session, question, GREEDY, timeout=60))[-1].session
        sent.append(session.pixels)
    worker.close()
    assert sent[0] is sent[1] and sent[0] is not None  # made once, at the first question
    assert (kept.misses, kept.hits) == (1, 1)
    alone = engine.generate_full([Request(session.turns[:3], ASSET)], GREEDY)[0].text
    assert session.turns[3].text == alone  # the kept prefix changes no token

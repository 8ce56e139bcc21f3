"""``infer.py mode=chat``: message rules, commands, context overflow, and the chat on a real terminal."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from yivl.data.chat import Turn
from yivl.models.generation import GenerationSettings
from yivl.serving.chat import HELP, Chat, run_chat
from yivl.serving.chat_input import LineReader
from yivl.serving.engine import Engine, Request

from .helpers import RecordingEngine
from .pty_session import CTRL_C, CTRL_D, PASTE_END, PASTE_START, PtySession

ROOT = Path(__file__).resolve().parents[2]
IMAGE = ROOT / "assets" / "shapes.png"
GREEDY = GenerationSettings(temperature=0, max_new_tokens=6)
START_S = 180  # starting Python, torch and the tiny model on a busy machine


def infer_cfg(*overrides: str) -> DictConfig:
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return compose("infer", overrides=[f"paths.root_dir={ROOT}", *overrides])


def scripted(*lines: str, waiting: tuple[int, ...] = ()) -> LineReader:
    """A reader over ``lines``; after the lines numbered in ``waiting`` the next one has already arrived
    (as in a paste). EOFError after the last line."""
    feed = iter(lines)
    count = [0]

    def read_line(_prompt: str) -> str:
        count[0] += 1
        try:
            return next(feed)
        except StopIteration:
            raise EOFError from None

    return LineReader(read_line, lambda: count[0] - 1 in waiting)


def test_enter_sends_a_backslash_continues_and_a_paste_stays_one_message():
    reader = scripted("one \\", "two", "pasted", "", "still pasted", "", "next", waiting=(2, 3))
    assert reader.read() == "one \ntwo"
    assert reader.read() == "pasted\n\nstill pasted"  # the blank lines of a paste stay in it
    assert reader.read() == ""  # a lone Enter: an empty message, which the chat ignores
    assert reader.read() == "next"
    with pytest.raises(EOFError):
        reader.read()


@pytest.fixture
def recorder(engine: Engine) -> Iterator[RecordingEngine]:
    recording = RecordingEngine(engine)
    yield recording
    engine.context_length = int(engine.loaded.config.llm["max_position_embeddings"])


def chat_of(recorder: RecordingEngine, settings: GenerationSettings = GREEDY) -> Chat:
    return Chat(recorder, settings, timeout_s=60)


def test_chat_keeps_history_and_puts_the_image_in_the_first_turn_only(engine: Engine, capsys) -> None:
    cfg = infer_cfg(f"image={IMAGE}", "generation.temperature=0", "generation.max_new_tokens=4")
    seen: list[list[Turn]] = []
    original = engine.prompt

    def spy(req, settings, on_text=None, key_image=False):  # the worker turns each request into a row here
        seen.append(list(req.turns))
        return original(req, settings, on_text, key_image)

    engine.prompt = spy  # type: ignore[method-assign]
    try:
        run_chat(cfg, engine, GREEDY, reader=scripted("first?", "second?", "/exit"))
    finally:
        del engine.prompt
    assert [len(turns) for turns in seen] == [1, 3]
    assert [t.role for t in seen[1]] == ["human", "assistant", "human"]
    ids = engine.prompt_ids(seen[1], has_image=True)
    assert ids.count(-200) == 1
    assert capsys.readouterr().out.startswith("Chatting with ")


def test_turns_after_the_first_are_prefilled_after_the_kept_image_and_answer_the_same(engine: Engine):
    chat = Chat(engine, GREEDY, timeout_s=60)
    try:
        chat.set_image(str(IMAGE))
        for question in ("first?", "and the second?", "a third?"):
            chat.ask(question)
        kept = chat.worker.metrics.images
        assert (kept.misses, kept.hits, len(kept)) == (1, 2, 1)
        turns = chat.turns
        for end in (4, 6):  # each later answer is the one the request gets without any cache
            alone = engine.generate_full([Request(turns[: end - 1], IMAGE)], GREEDY)[0].text
            assert turns[end - 1].text == alone
    finally:
        chat.close()


def test_commands_are_never_sent_to_the_model(recorder: RecordingEngine, capsys):
    chat = chat_of(recorder)
    try:
        chat.loop(
            scripted("/help", "/bogus", "/image /no/such.png", "/clear", "", "  ", "exit", "never read")
        )
    finally:
        chat.close()
    out = capsys.readouterr().out
    assert recorder.requests == []
    assert HELP in out
    assert "unknown command /bogus; /help lists the commands\n" in out
    assert "error: image not found: /no/such.png; check the path\n" in out
    assert "Conversation cleared.\n" in out


def test_a_paste_that_looks_like_commands_is_one_message(recorder: RecordingEngine):
    chat = chat_of(recorder)
    try:
        chat.loop(scripted("Explain:", "", "/exit", "exit", "/exit", waiting=(0, 1, 2)))
    finally:
        chat.close()
    assert [r.turns[0].text for r in recorder.requests] == ["Explain:\n\n/exit\nexit"]


def test_image_and_clear_start_new_conversations(recorder: RecordingEngine, capsys):
    chat = chat_of(recorder)
    try:
        lines = ("hi", f"/image '{IMAGE}'", "what?", "more?", "/clear", "again?", "/image", "text?", "/exit")
        chat.loop(scripted(*lines))
    finally:
        chat.close()
    asked = [([t.text for t in r.turns if t.role == "human"], r.image is not None) for r in recorder.requests]
    assert asked == [
        (["hi"], False),
        (["what?"], True),
        (["what?", "more?"], True),
        (["again?"], True),
        (["text?"], False),
    ]
    out = capsys.readouterr().out
    assert "Now about shapes.png (320×240): a new conversation.\n" in out
    assert "Conversation cleared; still about shapes.png.\n" in out
    assert "No image: a new, text-only conversation.\n" in out


def length_of(engine: Engine, turns: list[Turn]) -> int:
    return engine.prompt_length(engine.prompt_ids(turns, has_image=False))


def test_a_conversation_that_outgrows_the_context_drops_the_oldest_turns(
    engine: Engine, recorder: RecordingEngine, capsys
):
    long = " ".join(["tell me more"] * 12)
    huge = " ".join(["x"] * 400)
    engine.context_length = length_of(engine, [Turn("human", long)]) + 20  # room for 6 new tokens
    chat = chat_of(recorder)
    try:
        chat.loop(scripted("first question", long, huge, "short", "/exit"))
    finally:
        chat.close()
    sent = [[t.text for t in r.turns if t.role == "human"] for r in recorder.requests]
    assert sent[0] == ["first question"] and sent[1] == [long]  # the first exchange made room
    assert sent[2][-1] == "short"  # the session went on after a message too long for any context
    out = capsys.readouterr().out
    assert "[the conversation outgrew the context: the oldest 1 exchange(s) are dropped]\n" in out
    too_long = length_of(engine, [Turn("human", huge)])
    assert (
        f"error: this message is {too_long} tokens but the model's context is "
        f"{engine.context_length}; shorten it (nothing was sent)\n"
    ) in out
    assert all(length_of(engine, r.turns) < engine.context_length for r in recorder.requests)


def greedy_answer(engine: Engine, turns: list[Turn], max_new_tokens: int) -> str:
    settings = GenerationSettings(temperature=0, max_new_tokens=max_new_tokens)
    return engine.generate([Request(turns)], settings)[0]


@pytest.mark.slow
def test_infer_chat_on_a_terminal(tiny_checkpoint: Path, tmp_path: Path):
    """Through ``infer.py mode=chat`` on a pty: help, pastes with blank lines, a lone Enter, Ctrl-C at
    the prompt, a bad /image; ``exit`` quits with status 0 and readline's history is saved."""
    history = tmp_path / "history"
    args = ["infer.py", "mode=chat", f"model.path={tiny_checkpoint}", "generation.max_new_tokens=4"]
    session = PtySession([*args, "generation.temperature=0", f"chat.history_file={history}"])
    try:
        session.expect("/exit or Ctrl-D quits.", START_S)
        session.expect("Human: ")
        session.send("/help\r")
        assert "/image PATH    talk about another image" in session.expect("Human: ")
        session.send("line one\n\nline two\n")  # a terminal without bracketed paste: lines at once
        shown = session.expect("Human: ")
        assert shown.count("Assistant: ") == 1
        session.send(PASTE_START + b"para one\n\npara two\n" + PASTE_END + b"\r")  # bracketed paste
        assert session.expect("Human: ").count("Assistant: ") == 1
        session.send("\r")
        session.expect("Human: ")
        session.send("half typed")
        # a Ctrl-C that lands before readline waits for keys is only seen at the next key (the signal
        # does not wake a select() that has not started): let readline echo the text and settle first
        session.expect("half typed")
        time.sleep(0.3)
        session.send(CTRL_C)
        session.expect("(/exit or Ctrl-D quits)")
        session.expect("Human: ")
        session.send("/image /no/such.png\r")
        assert "error: image not found: /no/such.png; check the path" in session.expect("Human: ")
        session.send("exit\r")
        assert session.wait() == 0
        assert "Traceback" not in session.output
    finally:
        session.close()
    saved = history.read_text().splitlines()
    assert saved[0] == "/help" and saved[-2:] == ["/image /no/such.png", "exit"]


@pytest.mark.slow
def test_ctrl_c_stops_an_answer_and_ctrl_d_quits_on_a_terminal(
    tiny_checkpoint: Path, engine: Engine, tmp_path
):
    """The chat loop on a pty over a slow model: Ctrl-C mid-answer keeps the part shown and the session
    goes on with it as context; Ctrl-D quits with status 0."""
    log = tmp_path / "requests.jsonl"
    argv = ["-m", "tests.serving.chat_driver", str(tiny_checkpoint), str(log), "4096", "0.4", "12"]
    session = PtySession(argv)
    try:
        session.expect("ready", START_S)
        session.expect("Human: ")
        session.send("Tell me a story\r")
        session.expect("Assistant: ")
        session.wait_for_output(30)  # some of the answer is shown (the rest takes 4 s more at least)
        session.send(CTRL_C)
        session.expect("[answer stopped; the part shown is kept]", 10)
        session.expect("Human: ")
        session.send("And then?\r")
        session.expect("Assistant: ")
        session.expect("Human: ", 60)
        session.send(CTRL_D)
        assert session.wait() == 0
    finally:
        session.close()
    requests = [json.loads(line) for line in log.read_text().splitlines()]
    assert [len(r["turns"]) for r in requests] == [1, 3]
    partial = requests[1]["turns"][1][1]
    full = greedy_answer(engine, [Turn("human", "Tell me a story")], 12)
    assert partial.strip() and full.startswith(partial) and len(partial) < len(full)

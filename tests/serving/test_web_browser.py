"""The web demo in a real headless Chromium (Playwright): upload, ask, streamed answer, follow-up, clear,
refused uploads, Stop, Regenerate and the example images.

Needs a Chromium binary: Debian's ``chromium`` package (found on PATH or via ``YIVL_CHROMIUM``) or one
installed by ``python -m playwright install chromium``. Only 127.0.0.1 is contacted; every wait is bounded.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from yivl.data.chat import Turn
from yivl.models.generation import GenerationSettings
from yivl.serving.engine import Engine, Request
from yivl.serving.web_examples import write_examples
from yivl.serving.worker import GenerationWorker

from .helpers import RecordingEngine, SlowEngine, png_bytes

pytestmark = pytest.mark.slow
playwright_api = pytest.importorskip("playwright.sync_api")
web = pytest.importorskip("yivl.serving.web")

ASSET = Path(__file__).resolve().parents[2] / "assets" / "shapes.png"
MAX_TOKENS = 24
MAX_UPLOAD = 200_000
WAIT_MS = 60_000
LOCAL = ("http://127.0.0.1", "ws://127.0.0.1")

WATCH_STREAM = """() => {
  window.__seen = [];
  const chat = document.querySelector('#chat');
  new MutationObserver(() => {
    const bots = chat.querySelectorAll('.bot-row .message-content');
    if (bots.length) window.__seen.push(bots[bots.length - 1].innerText);
  }).observe(chat, {subtree: true, childList: true, characterData: true});
}"""


def chromium_path() -> str | None:
    """A Chromium to drive: ``YIVL_CHROMIUM``, Debian's package, or Playwright's own download."""
    for candidate in (
        os.environ.get("YIVL_CHROMIUM"),
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def normalize(text: str) -> str:
    """What a browser shows of a text: whitespace collapsed, control characters dropped."""
    return "".join(ch for ch in " ".join(text.split()) if ch.isprintable())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def demo_server(worker: GenerationWorker) -> Iterator[str]:
    settings = web.WebSettings(
        temperature=0.0, max_new_tokens=MAX_TOKENS, max_upload_bytes=MAX_UPLOAD, render_markdown=False
    )
    demo = web.build_demo(worker, settings)
    port = free_port()
    web.launch(demo, "127.0.0.1", port, False, MAX_UPLOAD, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    path = chromium_path()
    with playwright_api.sync_playwright() as p:
        if path is None and not Path(p.chromium.executable_path).is_file():
            if os.environ.get("CI"):
                pytest.fail("no Chromium for the browser tests: apt-get install -y chromium")
            pytest.skip("no Chromium: apt-get install -y chromium (or set YIVL_CHROMIUM)")
        browser = p.chromium.launch(executable_path=path, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def engines(engine: Engine) -> tuple[SlowEngine, RecordingEngine]:
    """The demo's engine: slow enough to watch the answer grow, and keeping every request it gets."""
    recorder = RecordingEngine(engine)
    return SlowEngine(recorder, delay=0.04), recorder


@pytest.fixture(scope="module")
def demo_url(engines: tuple[SlowEngine, RecordingEngine]) -> Iterator[str]:
    worker = GenerationWorker(engines[0])
    with demo_server(worker) as url:
        yield url
    worker.close()


@pytest.fixture
def page(browser: object, demo_url: str) -> Iterator[object]:
    """A fresh tab on the demo that may talk to 127.0.0.1 only (anything else fails the test)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    outside: list[str] = []

    def only_local(route: object) -> None:
        if route.request.url.startswith(LOCAL):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_local)
    tab = context.new_page()
    tab.set_default_timeout(WAIT_MS)
    tab.goto(demo_url)
    tab.wait_for_selector("#question textarea")
    yield tab
    context.close()
    assert outside == [], f"the page tried to reach {outside}"


def upload(page: object, path: Path) -> None:
    page.set_input_files("#image input[type=file]", str(path))


def ask(page: object, question: str) -> str:
    """Type a question, press Enter, wait until the answer is done; return the last answer shown."""
    before = page.locator("#chat .bot-row").count()
    page.fill("#question textarea", question)
    page.press("#question textarea", "Enter")
    page.wait_for_function(f"document.querySelectorAll('#chat .bot-row').length > {before}")
    page.wait_for_function("!document.querySelector('#status').innerText.includes('Generating')")
    page.wait_for_function("!document.querySelector('#clear').disabled")
    return page.locator("#chat .bot-row .message-content").last.inner_text()


def status(page: object) -> str:
    return page.inner_text("#status")


def expected(engine: Engine, turns: list[Turn], image: Path | None) -> str:
    settings = GenerationSettings(temperature=0, max_new_tokens=MAX_TOKENS)
    return normalize(engine.generate([Request(turns, image)], settings)[0])


def test_upload_ask_stream_follow_up_and_clear(page: object, engine: Engine):
    upload(page, ASSET)
    page.wait_for_function("document.querySelector('#status').innerText.includes('New image')")
    page.evaluate(WATCH_STREAM)
    first = ask(page, "What shapes are there?")
    assert normalize(first) == expected(engine, [Turn("human", "What shapes are there?")], ASSET)
    seen = [normalize(s) for s in page.evaluate("window.__seen") if s.strip()]
    growing = sorted(set(seen), key=len)
    assert len(growing) >= 3, f"the answer was not streamed: {growing}"
    assert all(normalize(first).startswith(s) for s in growing)

    second = ask(page, "What colours are they?")
    turns = [
        Turn("human", "What shapes are there?"),
        Turn("assistant", first),
        Turn("human", "What colours are they?"),
    ]
    assert normalize(second) == expected(engine, turns, ASSET)
    assert page.locator("#chat .user-row").count() == 2

    page.click("#clear")
    page.wait_for_function("document.querySelectorAll('#chat .bot-row').length === 0")
    assert "cleared" in status(page)
    again = ask(page, "Describe it.")  # same image, fresh conversation
    assert normalize(again) == expected(engine, [Turn("human", "Describe it.")], ASSET)
    assert page.locator("#chat .user-row").count() == 1


def test_a_new_image_starts_a_new_conversation(page: object, tmp_path: Path):
    upload(page, ASSET)
    page.wait_for_function("document.querySelector('#status').innerText.includes('New image')")
    ask(page, "Hello?")
    other = tmp_path / "red.png"
    other.write_bytes(png_bytes((90, 30)))
    upload(page, other)
    page.wait_for_function("document.querySelector('#status').innerText.includes('90×30')")
    assert page.locator("#chat .bot-row").count() == 0


def test_text_only_chat_without_an_image(page: object, engine: Engine):
    answer = ask(page, "Just text")
    assert normalize(answer) == expected(engine, [Turn("human", "Just text")], None)


def test_bad_uploads_show_a_message_and_the_demo_keeps_working(page: object, tmp_path: Path, engine: Engine):
    fake = tmp_path / "notes.png"
    fake.write_text("not an image at all")
    upload(page, fake)
    page.wait_for_function("document.querySelector('#status').innerText.includes('Could not use notes.png')")
    big = tmp_path / "huge.png"
    big.write_bytes(b"\0" * (MAX_UPLOAD + 1000))
    upload(page, big)
    page.get_by_text("exceed the maximum allowed size").first.wait_for()
    answer = ask(page, "Still there?")
    assert normalize(answer) == expected(engine, [Turn("human", "Still there?")], None)


def test_two_tabs_at_once_get_their_own_answers(browser: object, demo_url: str, engine: Engine):
    tabs = []
    for _ in range(2):
        tab = browser.new_page()
        tab.set_default_timeout(WAIT_MS)
        tab.goto(demo_url)
        tab.wait_for_selector("#question textarea")
        tabs.append(tab)
    questions = ["First tab question", "Second tab asks this"]
    for tab, question in zip(tabs, questions, strict=True):  # both queued before either finishes
        tab.fill("#question textarea", question)
        tab.press("#question textarea", "Enter")
    answers: list[str] = []
    for tab in tabs:
        tab.wait_for_function("document.querySelectorAll('#chat .bot-row').length === 1")
        tab.wait_for_function("document.querySelector('#status').innerText.trim() === ''")
        answers.append(normalize(tab.locator("#chat .bot-row .message-content").last.inner_text()))
        tab.close()
    assert answers == [expected(engine, [Turn("human", q)], None) for q in questions]


def test_a_refused_upload_drops_the_image_from_the_session(
    page: object, tmp_path: Path, engine: Engine, engines: tuple[SlowEngine, RecordingEngine]
):
    upload(page, ASSET)
    page.wait_for_function("document.querySelector('#status').innerText.includes('New image')")
    big = tmp_path / "huge.png"
    big.write_bytes(b"\0" * (MAX_UPLOAD + 1000))
    upload(page, big)
    page.get_by_text("exceed the maximum allowed size").first.wait_for()
    page.wait_for_function("document.querySelector('#status').innerText.includes('text-only')")
    assert page.locator("#image img").count() == 0
    answer = ask(page, "Anything there?")
    assert normalize(answer) == expected(engine, [Turn("human", "Anything there?")], None)
    assert engines[1].requests[-1].image is None  # the earlier image is gone, not just hidden


def test_regenerate_asks_the_last_question_again_in_place(
    page: object, engine: Engine, engines: tuple[SlowEngine, RecordingEngine]
):
    first = ask(page, "Say something")
    seen = len(engines[1].requests)
    page.click("#regenerate")
    page.wait_for_function("document.querySelector('#regenerate').disabled")
    page.wait_for_function("!document.querySelector('#regenerate').disabled")
    assert engines[1].requests[seen].turns == [Turn("human", "Say something")]  # not the old answer
    assert page.locator("#chat .user-row").count() == 1 and page.locator("#chat .bot-row").count() == 1
    again = page.locator("#chat .bot-row .message-content").last.inner_text()
    assert normalize(again) == normalize(first) == expected(engine, [Turn("human", "Say something")], None)


def test_stop_cancels_the_streaming_answer_and_keeps_what_was_shown(
    page: object, engine: Engine, engines: tuple[SlowEngine, RecordingEngine]
):
    slow = engines[0]
    full = expected(engine, [Turn("human", "Go on")], None)
    slow.delay = 0.5  # 24 tokens: 12 s if nothing stops it
    try:
        page.fill("#question textarea", "Go on")
        page.press("#question textarea", "Enter")
        page.wait_for_function("document.querySelector('#chat .bot-row .message-content')?.innerText.trim()")
        assert page.locator("#examples").is_hidden()  # no new image while the answer streams
        page.click("#stop")
        page.wait_for_function(
            "document.querySelector('#status').innerText.includes('Stopped')", timeout=5000
        )
    finally:
        slow.delay = 0.04
    partial = normalize(page.locator("#chat .bot-row .message-content").last.inner_text())
    assert partial and full.startswith(partial) and len(partial) < len(full)
    # the controls unlock in the update after the last one (Stop closes, Clear opens)
    page.wait_for_function(
        "document.querySelector('#stop').disabled && !document.querySelector('#clear').disabled"
    )
    page.locator("#examples").wait_for(state="visible")
    follow_up = ask(page, "And then?")  # the worker is free again, and the stopped turn is the context
    turns = [Turn("human", "Go on"), Turn("assistant", engines[1].requests[-1].turns[1].text)]
    assert normalize(turns[1].text) == partial
    assert normalize(follow_up) == expected(engine, [*turns, Turn("human", "And then?")], None)


def test_an_example_sets_the_image_and_the_question(page: object, tmp_path: Path, engine: Engine):
    image, question = write_examples(tmp_path)[0]
    page.locator("#examples").get_by_text(question).first.click()
    page.wait_for_function("document.querySelector('#status').innerText.includes('New image (320×240)')")
    assert page.input_value("#question textarea") == question
    assert page.locator("#image img").count() == 1
    answer = ask(page, question)
    assert normalize(answer) == expected(engine, [Turn("human", question)], Path(image))

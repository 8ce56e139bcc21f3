"""The gradio web demo: upload an image, chat about it with streamed answers.

    python infer.py mode=web model.path=/models/Yi-VL-6B        # then open http://127.0.0.1:8111

Generation runs through the one :class:`~yivl.serving.worker.GenerationWorker` and gradio's queue runs
one chat event at a time, so several tabs wait their turn instead of corrupting each other's answers.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a local demo phones nowhere

import gradio as gr

from yivl.data.images import DEFAULT_MAX_PIXELS
from yivl.errors import YivlError
from yivl.serving.web_examples import write_examples
from yivl.serving.web_session import (
    Answering,
    Session,
    generation_settings,
    last_question,
    new_image,
    respond,
)
from yivl.serving.worker import GenerationWorker

TITLE = "Yi-VL"
INTRO = (
    "Upload an image (or pick an example) and ask about it; a new image starts a new conversation. "
    "Without an image the chat is text-only. The image is padded to a square, as in training."
)


@dataclass
class WebSettings:
    """Slider defaults (the original demo's) and the limits of the demo."""

    temperature: float = 0.2
    top_p: float = 0.7
    max_new_tokens: int = 512
    max_new_tokens_limit: int = 1024
    max_upload_bytes: int = 20_000_000
    max_pixels: int = DEFAULT_MAX_PIXELS
    queue_size: int = 16
    request_timeout_s: float = 600.0
    render_markdown: bool = True
    concurrent_answers: int = 8  # answers streamed at once: the worker batches them (web.max_batch_size)


class UploadedImage(gr.Image):
    """``gr.Image`` that hands a file it cannot open to the app (which says why) instead of failing."""

    is_template = True  # rendered by the frontend's Image component

    def preprocess(self, payload: object) -> object:
        try:
            return super().preprocess(payload)
        except Exception:
            return None if payload is None else payload.path


def build_demo(worker: GenerationWorker, settings: WebSettings) -> gr.Blocks:
    """The page: image, examples and sliders on the left, the chat and its buttons on the right."""
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        state = (gr.State(Session()), gr.State(Answering()))
        gr.Markdown(f"# {TITLE}\n{INTRO}")
        with gr.Row():
            with gr.Column(scale=1):
                image = UploadedImage(
                    label="Image",
                    type="filepath",
                    image_mode=None,
                    sources=["upload", "clipboard"],
                    buttons=["fullscreen"],
                    elem_id="image",
                )
                sliders = _sliders(settings)
            with gr.Column(scale=2):
                chatbot = gr.Chatbot(
                    label="Conversation",
                    elem_id="chat",
                    height=460,
                    buttons=["copy", "copy_all"],
                    render_markdown=settings.render_markdown,
                )
                status = gr.Markdown("", elem_id="status")
                question = gr.Textbox(
                    label="Question", placeholder="Ask about the image, then press Enter", elem_id="question"
                )
                with gr.Row():
                    send = gr.Button("Send", variant="primary", elem_id="send")
                    stop = gr.Button("Stop", elem_id="stop", interactive=False)
                    regenerate = gr.Button("Regenerate", elem_id="regenerate")
                    clear = gr.Button("Clear conversation", elem_id="clear")
        view = (*state, chatbot, status, question)
        buttons = Buttons(send, stop, regenerate, clear)
        examples = _wire_image(settings, image, view)  # and the examples, below the row
        _wire_chat(worker, settings, sliders, view, buttons, [image, examples.dataset])
        _wire_controls(view, buttons)
    demo.queue(max_size=settings.queue_size, default_concurrency_limit=1)
    return demo


def _examples_folder() -> Path:
    """A fresh temporary folder for the example images, removed when the process ends."""
    folder = Path(tempfile.mkdtemp(prefix="yivl-web-examples-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def _sliders(settings: WebSettings) -> list[gr.Slider]:
    return [
        gr.Slider(0.0, 1.0, value=settings.temperature, step=0.1, label="Temperature (0 = greedy)"),
        gr.Slider(0.05, 1.0, value=settings.top_p, step=0.05, label="Top P"),
        gr.Slider(
            16, settings.max_new_tokens_limit, value=settings.max_new_tokens, step=16, label="Max new tokens"
        ),
    ]


View = tuple[gr.State, gr.State, gr.Chatbot, gr.Markdown, gr.Textbox]
"""(session state, answering state, chatbot, status, question box)."""


@dataclass
class Buttons:
    send: gr.Button
    stop: gr.Button
    regenerate: gr.Button
    clear: gr.Button


def _wire_image(settings: WebSettings, image: gr.Image, view: View) -> gr.Examples:
    """A new image (uploaded or an example's) starts a new conversation; an image gone (cleared, or
    an upload refused for its size, which empties the panel) leaves the session too."""
    session, _, chatbot, status, question = view

    def on_image(path: str | None) -> tuple:
        fresh, message = new_image(path, settings.max_pixels, settings.max_upload_bytes)
        shown = gr.update() if fresh.image is not None or path is None else gr.update(value=None)
        return fresh, [], message, shown

    def on_change(path: str | None, current: Session) -> tuple:
        if path is not None or current.image is None:  # a new image is the upload event's
            return gr.update(), gr.update(), gr.update(), gr.update()
        return on_image(None)

    def on_example(path: str, text: str) -> tuple:
        fresh, chat, message, _ = on_image(path)
        return fresh, chat, message, text

    outputs = [session, chatbot, status, image]
    image.upload(on_image, [image], outputs, concurrency_limit=None)
    image.change(on_change, [image, session], outputs, concurrency_limit=None)
    return gr.Examples(
        write_examples(_examples_folder()),
        [image, question],
        [session, chatbot, status, question],
        on_example,
        cache_examples=False,
        run_on_click=True,
        label="Examples (click one)",
        elem_id="examples",
    )


def _wire_chat(
    worker: GenerationWorker,
    settings: WebSettings,
    sliders: list[gr.Slider],
    view: View,
    buttons: Buttons,
    inputs: list,
) -> None:
    """Send (and Enter) asks; Regenerate asks the last question again, in place of its answer.

    While an answer streams, the image, Regenerate and Clear are locked and the examples hidden (the
    finished turn is written back into the tab's session and would otherwise overwrite a reset or a new
    image chosen meanwhile); Stop is open. ``inputs`` is (image, examples' dataset).
    """
    session, answering, chatbot, status, question = view

    def answer(current: Session, text: str, sliders_now: tuple, running: Answering) -> Iterator:
        try:
            gen = generation_settings(*sliders_now)
        except Exception as exc:
            yield current, current.messages(), f"⚠️ {exc}", text, *_locks(streaming=False)
            return
        for update in respond(worker, current, text, gen, settings.request_timeout_s, running):
            yield update.session, update.messages, update.status, update.question, *_locks(streaming=True)
        yield gr.update(), gr.update(), gr.update(), gr.update(), *_locks(streaming=False)

    def on_ask(text: str, temperature: float, top_p: float, max_tokens: float, current, running) -> Iterator:
        yield from answer(current, text, (temperature, top_p, max_tokens), running)

    def on_regenerate(temperature: float, top_p: float, max_tokens: float, current, running) -> Iterator:
        try:
            earlier, text = last_question(current)
        except YivlError as exc:
            yield current, current.messages(), str(exc), gr.update(), *_locks(streaming=False)
            return
        yield from answer(earlier, text, (temperature, top_p, max_tokens), running)

    locked = [inputs[0], buttons.regenerate, buttons.clear, buttons.stop, inputs[1]]
    outputs = [session, chatbot, status, question, *locked]
    common = {
        "outputs": outputs,
        "concurrency_limit": settings.concurrent_answers,
        "concurrency_id": "generate",
    }
    ask = {"fn": on_ask, "inputs": [question, *sliders, session, answering], **common}
    buttons.send.click(**ask)
    question.submit(**ask)
    buttons.regenerate.click(on_regenerate, [*sliders, session, answering], **common)


def _locks(streaming: bool) -> tuple:
    """Updates of (image, Regenerate, Clear, Stop, examples): Stop is usable only while an answer
    streams, the others only while none does."""
    others = gr.update(interactive=not streaming)
    return others, others, others, gr.update(interactive=streaming), gr.update(visible=not streaming)


def _wire_controls(view: View, buttons: Buttons) -> None:
    """Clear forgets the turns (the image stays); Stop cancels the answer streaming in this tab."""
    session, answering, chatbot, status, question = view

    def on_clear(current: Session) -> tuple:
        kept = Session(image=current.image, image_name=current.image_name, pixels=current.pixels)
        return kept, [], "Conversation cleared.", ""

    def on_stop(running: Answering) -> None:
        running.stop()

    outputs = [session, chatbot, status, question]
    buttons.clear.click(on_clear, [session], outputs, concurrency_limit=None)
    chatbot.clear(on_clear, [session], outputs, concurrency_limit=None)
    buttons.stop.click(on_stop, [answering], None, concurrency_limit=None)


def launch(demo: gr.Blocks, host: str, port: int, share: bool, max_upload_bytes: int, **kwargs) -> None:
    """Serve the demo (blocking unless ``prevent_thread_lock=True`` is passed)."""
    demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size=max_upload_bytes,
        ssr_mode=False,
        footer_links=["settings"],
        **kwargs,
    )

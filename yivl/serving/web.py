"""The gradio web demo: upload an image, chat about it with streamed answers.

    python infer.py mode=web model.path=/models/Yi-VL-6B        # then open http://127.0.0.1:8111

Generation runs through the one :class:`~yivl.serving.worker.GenerationWorker` and gradio's queue runs
one chat event at a time, so several tabs wait their turn instead of corrupting each other's answers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a local demo phones nowhere

import gradio as gr

from yivl.data.images import DEFAULT_MAX_PIXELS
from yivl.serving.web_session import Session, Update, generation_settings, new_image, respond
from yivl.serving.worker import GenerationWorker

TITLE = "Yi-VL"
INTRO = (
    "Upload an image and ask about it; a new image starts a new conversation. Without an image the chat "
    "is text-only. The image is padded to a square, as in training."
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


class UploadedImage(gr.Image):
    """``gr.Image`` that hands a file it cannot open to the app (which says why) instead of failing."""

    is_template = True  # rendered by the frontend's Image component

    def preprocess(self, payload: object) -> object:
        try:
            return super().preprocess(payload)
        except Exception:
            return None if payload is None else payload.path


def build_demo(worker: GenerationWorker, settings: WebSettings) -> gr.Blocks:
    """The page: image and sliders on the left, the chat on the right."""
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        session = gr.State(Session())
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
                    clear = gr.Button("Clear conversation", elem_id="clear")
        _wire(worker, settings, image, sliders, (session, chatbot, status, question), clear, send)
    demo.queue(max_size=settings.queue_size, default_concurrency_limit=1)
    return demo


def _sliders(settings: WebSettings) -> list[gr.Slider]:
    return [
        gr.Slider(0.0, 1.0, value=settings.temperature, step=0.1, label="Temperature (0 = greedy)"),
        gr.Slider(0.05, 1.0, value=settings.top_p, step=0.05, label="Top P"),
        gr.Slider(
            16, settings.max_new_tokens_limit, value=settings.max_new_tokens, step=16, label="Max new tokens"
        ),
    ]


def _wire(
    worker: GenerationWorker,
    settings: WebSettings,
    image: gr.Image,
    sliders: list[gr.Slider],
    view: tuple[gr.State, gr.Chatbot, gr.Markdown, gr.Textbox],
    clear: gr.Button,
    send: gr.Button,
) -> None:
    """Connect the events; ``view`` is (session state, chatbot, status, question box)."""
    session, chatbot, status, question = view

    def on_image(path: str | None) -> tuple:
        fresh, message = new_image(path, settings.max_pixels, settings.max_upload_bytes)
        shown = gr.update() if fresh.image is not None or path is None else gr.update(value=None)
        return fresh, [], message, shown

    def on_clear(current: Session) -> tuple:
        kept = Session(image=current.image, image_name=current.image_name)
        return kept, [], "Conversation cleared.", ""

    def on_ask(text: str, temperature: float, top_p: float, max_tokens: float, current: Session) -> Iterator:
        try:
            gen = generation_settings(temperature, top_p, max_tokens)
        except Exception as exc:
            yield current, current.messages(), f"⚠️ {exc}", text, gr.update(), gr.update()
            return
        for update in respond(worker, current, text, gen, settings.request_timeout_s):
            yield _outputs(update)
        yield _outputs(None)  # generation over: unlock the image and the clear button

    image.upload(on_image, [image], [session, chatbot, status, image], concurrency_limit=None)
    image.clear(lambda: on_image(None), None, [session, chatbot, status, image], concurrency_limit=None)
    clear.click(on_clear, [session], [session, chatbot, status, question], concurrency_limit=None)
    chatbot.clear(on_clear, [session], [session, chatbot, status, question], concurrency_limit=None)
    # While an answer streams, the image and the clear button are locked: the finished turn is written
    # back into the tab's session and would otherwise overwrite a reset made meanwhile.
    outputs = [session, chatbot, status, question, image, clear]
    ask = {"fn": on_ask, "inputs": [question, *sliders, session], "outputs": outputs}
    send.click(**ask, concurrency_limit=1, concurrency_id="generate")
    question.submit(**ask, concurrency_limit=1, concurrency_id="generate")


def _outputs(update: Update | None) -> tuple:
    """Chat-event outputs; ``None`` leaves the chat as it is and unlocks the controls."""
    if update is None:
        unlock = gr.update(interactive=True)
        return gr.update(), gr.update(), gr.update(), gr.update(), unlock, unlock
    lock = gr.update(interactive=False)
    return update.session, update.messages, update.status, update.question, lock, lock


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

"""The web demo's logic, free of gradio: one browser tab's conversation and its streamed answers.

Each tab holds a :class:`Session`: the finished turns and the image they are about. A new image starts a
new conversation (Yi-VL sees one image, in front of the first question); no image means a text-only chat.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from yivl.data.chat import Turn
from yivl.data.images import load_image
from yivl.errors import YivlError
from yivl.models.generation import GenerationSettings
from yivl.serving.engine import Engine, Request
from yivl.serving.worker import Cancelled, Event, EventStream, GenerationWorker, Job

Message = dict[str, str]


@dataclass
class Session:
    """One tab's conversation: finished turns (human, assistant, ...) and the image, if any."""

    turns: list[Turn] = field(default_factory=list)
    image: Image.Image | None = None
    image_name: str | None = None
    pixels: torch.Tensor | None = None  # the image made for the model at the first question, then reused

    def model_pixels(self, engine: Engine) -> torch.Tensor | None:
        """The image as the model's pixels, made once per session (every turn then sends the same
        tensor: hashed once for the worker's image-prefix cache); None without an image."""
        if self.image is not None and self.pixels is None:
            self.pixels = engine.preprocess(self.image)
        return self.pixels

    def messages(self) -> list[Message]:
        """The turns as chatbot messages (``{"role": "user"|"assistant", "content": text}``)."""
        return [{"role": "user" if t.role == "human" else "assistant", "content": t.text} for t in self.turns]


@dataclass(frozen=True)
class Update:
    """What the page shows after a step: the chat, a status line, and the text box content."""

    session: Session
    messages: list[Message]
    status: str
    question: str = ""


class Answering:
    """The tab's answer in progress, so that Stop (an event of its own) can cancel it in the worker."""

    def __init__(self) -> None:
        self.job: Job | None = None

    def __deepcopy__(self, memo: dict) -> Answering:  # gradio copies a state's initial value per tab
        return Answering()

    def stop(self) -> bool:
        """Cancel the answer streaming now (False: there is none); its stream ends at once, even if
        the worker has not started it yet."""
        job = self.job
        if job is None:
            return False
        job.cancel()
        job.sink(Event("error", error=Cancelled("stopped")))
        return True


def last_question(session: Session) -> tuple[Session, str]:
    """``session`` without its last exchange, and that exchange's question (for Regenerate)."""
    for i in range(len(session.turns) - 1, -1, -1):
        if session.turns[i].role == "human":
            kept = Session(session.turns[:i], session.image, session.image_name, session.pixels)
            return kept, session.turns[i].text
    raise YivlError("nothing to regenerate yet: ask a question first")


def new_image(path: str | Path | None, max_pixels: int, max_bytes: int) -> tuple[Session, str]:
    """A fresh session about the uploaded image (none: text-only); a bad file -> no image and why."""
    if path is None:
        return Session(), "No image: a text-only conversation. Upload an image to ask about it."
    name = Path(path).name
    try:
        size = Path(path).stat().st_size
        if size > max_bytes:
            raise YivlError(f"{name} is {size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.1f} MB")
        image = load_image(path, max_pixels=max_pixels)
    except (YivlError, OSError) as exc:
        reason = str(exc).replace(str(path), name)  # the upload's own name, not the server's temp path
        return Session(), f"⚠️ Could not use {name}: {reason}. Upload a PNG, JPEG, WebP or GIF image."
    return Session(
        image=image, image_name=name
    ), f"New image ({image.width}×{image.height}): new conversation."


def respond(
    worker: GenerationWorker,
    session: Session,
    question: str,
    settings: GenerationSettings,
    timeout: float,
    answering: Answering | None = None,
) -> Iterator[Update]:
    """Ask ``question``: the question at once, then the answer as it grows, then the finished turn.

    A failure leaves the session as it was, puts the question back in the text box and says why. An
    answer stopped (``answering.stop()``) keeps the part shown, as the next question's context.
    """
    question = question.strip()
    if not question:
        yield Update(session, session.messages(), "Type a question first.")
        return
    pending = [*session.turns, Turn("human", question)]
    shown = [*session.messages(), {"role": "user", "content": question}, {"role": "assistant", "content": ""}]
    try:
        stream = EventStream(
            worker, [Request(pending, session.model_pixels(worker.engine))], settings, timeout
        )
    except YivlError as exc:  # the worker's queue is full
        yield _failed(session, question, exc)
        return
    if answering is not None:
        answering.job = stream.job  # before the first update: Stop works from the moment it shows
    yield Update(session, list(shown), "Generating…")
    try:
        for event in stream:
            if event.kind == "text":
                shown[-1] = {"role": "assistant", "content": shown[-1]["content"] + event.delta}
                yield Update(session, list(shown), "Generating…")
            elif event.kind == "done":
                yield _finished(session, pending, event.answers[0], "")
            elif isinstance(event.error, Cancelled) and shown[-1]["content"].strip():
                yield _finished(session, pending, shown[-1]["content"], "Stopped.")
            else:
                yield _failed(session, question, event.error)
    finally:
        if answering is not None and answering.job is stream.job:
            answering.job = None


def _finished(session: Session, pending: list[Turn], answer: str, status: str) -> Update:
    done = Session([*pending, Turn("assistant", answer)], session.image, session.image_name, session.pixels)
    return Update(done, done.messages(), status)


def _failed(session: Session, question: str, error: BaseException | None) -> Update:
    reason = "stopped" if isinstance(error, Cancelled) else str(error)
    return Update(session, session.messages(), f"⚠️ No answer: {reason}", question)


def generation_settings(temperature: float, top_p: float, max_new_tokens: float, seed: int | None = None):
    """Slider values -> settings (temperature 0 is greedy)."""
    return GenerationSettings(
        temperature=float(temperature),
        top_p=None if top_p >= 1 else float(top_p),
        max_new_tokens=int(max_new_tokens),
        seed=seed,
    )

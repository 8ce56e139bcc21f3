"""What front ends hand the worker (a :class:`Job`) and what comes back (:class:`Event`s)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from yivl.models.generation import Generation, GenerationSettings
from yivl.models.sampling import TokenLogprob
from yivl.serving.engine import Request

log = logging.getLogger(__name__)

EventKind = Literal["text", "done", "error"]


class Cancelled(Exception):
    """The error of a job that ended early: its client went away or stopped it."""


@dataclass
class Event:
    """``text``: ``delta`` of answer ``index`` (and, when asked for, the ``logprobs`` of the tokens
    generated since the last text event); ``done``: all ``generations`` (text, token count, finish
    reason, logprobs); ``error``: why it failed."""

    kind: EventKind
    index: int = 0
    delta: str = ""
    generations: list[Generation] = field(default_factory=list)
    error: BaseException | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)

    @property
    def answers(self) -> list[str]:
        """The finished answers' texts."""
        return [g.text for g in self.generations]


@dataclass
class Job:
    """Requests answered together (one per choice); ``sink`` receives events on the worker thread."""

    requests: list[Request]
    settings: GenerationSettings
    sink: Callable[[Event], None]
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.monotonic)

    def cancel(self) -> None:
        """Stop this job at its next token (or skip it if it has not started)."""
        self.cancelled.set()


class TextBuffer:
    """Collects streamed text (and logprobs) per answer and hands it on at most every ``interval`` s."""

    def __init__(self, job: Job, interval: float) -> None:
        self.job = job
        self.interval = interval
        self.pending: dict[int, Event] = {}
        self.last = float("-inf")

    def add(self, index: int, delta: str, logprobs: list[TokenLogprob] | None = None) -> None:
        event = self.pending.get(index)
        if event is None:  # not setdefault: that would build an Event for every token
            event = self.pending[index] = Event("text", index=index)
        event.delta += delta
        if logprobs:
            event.logprobs.extend(logprobs)
        if time.monotonic() - self.last >= self.interval:
            self.flush()

    def flush(self) -> None:
        for event in self.pending.values():
            deliver(self.job, event)
        self.pending.clear()
        self.last = time.monotonic()


def deliver(job: Job, event: Event) -> None:
    """Hand ``event`` to the job's consumer; a consumer that can no longer take it (its event loop has
    closed) cancels the job instead of killing the worker thread."""
    try:
        job.sink(event)
    except Exception:
        log.warning("dropping a generation whose client is gone", exc_info=True)
        job.cancel()

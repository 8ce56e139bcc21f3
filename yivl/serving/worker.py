"""One generation at a time: a single worker thread in front of the engine, shared by the web demo and API.

Front ends submit a :class:`Job` and read its events (text deltas, then the answers or an error). The model
never runs two generations at once, so concurrent clients cannot corrupt each other's KV caches or
streams; waiting jobs queue up to a limit, and a job whose client went away is cancelled at its next
token, freeing the worker.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from yivl.errors import YivlError
from yivl.models.generation import Generation, GenerationSettings
from yivl.serving.engine import Request

log = logging.getLogger(__name__)

EventKind = Literal["text", "done", "error"]


class EngineLike(Protocol):
    """What the worker needs from :class:`yivl.serving.engine.Engine`."""

    def generate_full(
        self,
        requests: Sequence[Request],
        settings: GenerationSettings,
        on_text: Callable[[int, str], None] | None = None,
    ) -> list[Generation]: ...


class WorkerBusy(YivlError):
    """The queue of waiting generations is full."""


class Cancelled(Exception):
    """Raised inside the engine's streaming callback to stop a job whose client has gone."""


@dataclass
class Event:
    """``text``: ``delta`` of answer ``index``; ``done``: all ``generations`` (text, token count, finish
    reason); ``error``: why it failed."""

    kind: EventKind
    index: int = 0
    delta: str = ""
    generations: list[Generation] = field(default_factory=list)
    error: BaseException | None = None

    @property
    def answers(self) -> list[str]:
        """The finished answers' texts."""
        return [g.text for g in self.generations]


@dataclass
class Job:
    """Requests answered together in one batched generation; ``sink`` receives events on the worker thread."""

    requests: list[Request]
    settings: GenerationSettings
    sink: Callable[[Event], None]
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """Stop this job at its next token (or skip it if it has not started)."""
        self.cancelled.set()


class GenerationWorker:
    """A daemon thread that runs jobs one after another; at most ``max_queue`` wait.

    Streamed text is handed over at most every ``stream_interval_s`` seconds (the first piece at once):
    a fast model's tokens then travel in small bunches instead of costing a thread switch and a network
    send each, while a human still sees the answer grow smoothly. 0 sends every piece on its own.
    """

    def __init__(self, engine: EngineLike, max_queue: int = 16, stream_interval_s: float = 0.02) -> None:
        self.engine = engine
        self.stream_interval_s = stream_interval_s
        self._jobs: queue.Queue[Job | None] = queue.Queue(maxsize=max(1, max_queue))
        self._thread = threading.Thread(target=self._loop, name="yivl-generation", daemon=True)
        self._thread.start()

    def submit(self, requests: Sequence[Request], settings: GenerationSettings, sink: Callable) -> Job:
        """Queue a job; :class:`WorkerBusy` when ``max_queue`` jobs are already waiting."""
        job = Job(list(requests), settings, sink)
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            raise WorkerBusy(
                f"{self._jobs.maxsize} generations are already waiting; try again in a moment"
            ) from None
        return job

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread after the jobs already queued."""
        self._jobs.put(None, timeout=timeout)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if not job.cancelled.is_set():
                self._run(job)

    def _run(self, job: Job) -> None:
        pieces = _TextBuffer(job, self.stream_interval_s)

        def on_text(index: int, delta: str) -> None:
            if job.cancelled.is_set():
                raise Cancelled
            pieces.add(index, delta)

        try:
            generations = self.engine.generate_full(job.requests, job.settings, on_text=on_text)
            pieces.flush()
        except Cancelled:
            log.info("generation cancelled: the client went away")
            _deliver(job, Event("error", error=Cancelled("cancelled")))
        except Exception as exc:  # the worker must survive anything one request does
            if not isinstance(exc, YivlError):
                log.exception("generation failed")
            _deliver(job, Event("error", error=exc))
        else:
            _deliver(job, Event("done", generations=generations))


class _TextBuffer:
    """Collects streamed text per answer and hands it on at most every ``interval`` seconds."""

    def __init__(self, job: Job, interval: float) -> None:
        self.job = job
        self.interval = interval
        self.pending: dict[int, str] = {}
        self.last = float("-inf")

    def add(self, index: int, delta: str) -> None:
        self.pending[index] = self.pending.get(index, "") + delta
        if time.monotonic() - self.last >= self.interval:
            self.flush()

    def flush(self) -> None:
        for index, text in self.pending.items():
            _deliver(self.job, Event("text", index=index, delta=text))
        self.pending.clear()
        self.last = time.monotonic()


def _deliver(job: Job, event: Event) -> None:
    """Hand ``event`` to the job's consumer; a consumer that can no longer take it (its event loop has
    closed) cancels the job instead of killing the worker thread."""
    try:
        job.sink(event)
    except Exception:
        log.warning("dropping a generation whose client is gone", exc_info=True)
        job.cancel()


class EventStream:
    """Submit a job now (so :class:`WorkerBusy` is raised here) and iterate its events from a thread.

    Iteration ends after ``done`` or ``error``; the job is cancelled when the consumer stops early, and a
    ``TimeoutError`` event ends it when ``timeout`` seconds pass (queue wait included). Text that piled
    up while the consumer was busy comes as one event, so a slow consumer costs one send, not one a token.
    """

    def __init__(
        self,
        worker: GenerationWorker,
        requests: Sequence[Request],
        settings: GenerationSettings,
        timeout: float,
    ) -> None:
        self._events: queue.Queue[Event] = queue.Queue()
        self._pending: deque[Event] = deque()
        self.timeout = timeout
        self.job = worker.submit(requests, settings, self._events.put)

    def _next(self, deadline: float) -> Event:
        return self._events.get(timeout=max(0.0, deadline - time.monotonic()))

    def __iter__(self) -> Iterator[Event]:
        deadline = time.monotonic() + self.timeout
        try:
            while True:
                try:
                    event = self._pending.popleft() if self._pending else self._next(deadline)
                except queue.Empty:
                    yield _timed_out(self.timeout)
                    return
                event = _coalesce(event, self._events, self._pending)
                yield event
                if event.kind != "text":
                    return
        finally:
            self.job.cancel()


class AsyncEventStream:
    """:class:`EventStream` for an asyncio event loop (the API): no thread per waiting client."""

    def __init__(
        self,
        worker: GenerationWorker,
        requests: Sequence[Request],
        settings: GenerationSettings,
        timeout: float,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._pending: deque[Event] = deque()
        self.timeout = timeout
        self.job = worker.submit(requests, settings, self._put)

    def _put(self, event: Event) -> None:
        self._loop.call_soon_threadsafe(self._events.put_nowait, event)

    async def _next(self, deadline: float) -> Event:
        return await asyncio.wait_for(self._events.get(), max(0.0, deadline - self._loop.time()))

    async def __aiter__(self) -> AsyncIterator[Event]:
        deadline = self._loop.time() + self.timeout
        try:
            while True:
                try:
                    event = self._pending.popleft() if self._pending else await self._next(deadline)
                except asyncio.TimeoutError:
                    yield _timed_out(self.timeout)
                    return
                event = _coalesce(event, self._events, self._pending)
                yield event
                if event.kind != "text":
                    return
        finally:
            self.job.cancel()


def _coalesce(event: Event, events: queue.Queue | asyncio.Queue, pending: deque[Event]) -> Event:
    """``event`` with the text of the same answer already waiting behind it appended; the first other
    event is kept in ``pending``."""
    while event.kind == "text" and not pending and not events.empty():
        following = events.get_nowait()
        if following.kind == "text" and following.index == event.index:
            event = Event("text", index=event.index, delta=event.delta + following.delta)
        else:
            pending.append(following)
    return event


def _timed_out(timeout: float) -> Event:
    return Event("error", error=TimeoutError(f"no answer within {timeout:g} s; the server is busy"))

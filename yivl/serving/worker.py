"""A single worker thread in front of the engine, shared by the web demo and the API.

Front ends submit a :class:`Job` and read its events (text deltas, then the answers or an error). Only
the worker thread touches the model, so concurrent clients cannot corrupt each other's KV caches or
streams. The worker batches continuously: jobs that arrive while others run join the running batch at
the next decode step, up to ``max_batch_size`` rows (:mod:`yivl.serving.batching`). Waiting jobs queue
up to a limit, and a job whose client went away is cancelled at its next token.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence

from yivl.errors import YivlError
from yivl.models.generation import GenerationSettings
from yivl.models.image_prefix import ImagePrefixCache
from yivl.serving.batching import BatchingEngine, BatchRunner
from yivl.serving.engine import Request
from yivl.serving.jobs import Cancelled, Event, EventKind, Job, deliver
from yivl.serving.metrics import ServingMetrics

__all__ = [
    "Arrival",
    "AsyncEventStream",
    "Cancelled",
    "Event",
    "EventKind",
    "EventStream",
    "GenerationWorker",
    "Job",
]


class WorkerBusy(YivlError):
    """The queue of waiting generations is full."""


class Arrival:
    """A request on its way to :meth:`GenerationWorker.submit` (being read and parsed): an idle worker
    waits a little for it so that requests arriving together are prefilled together. Ends when the
    request is submitted or when the ``with`` block exits (the request failed)."""

    def __init__(self, worker: GenerationWorker) -> None:
        self._worker = worker
        self.open = True

    def __enter__(self) -> Arrival:
        return self

    def __exit__(self, *exc: object) -> None:
        self._worker._arrived(self)


class GenerationWorker:
    """A daemon thread that runs jobs, batched up to ``max_batch_size`` rows; at most ``max_queue`` wait.

    A job with more choices than ``max_batch_size`` runs when the batch is empty. When the batch is
    empty and requests announced with :meth:`arriving` are still being parsed, the worker waits for them
    (at most ``batch_wait_s`` after the first job) so that a burst is prefilled together rather than
    one request first and the rest later. At most ``max_prefill_rows`` new rows are prefilled between
    two decode steps (a job with more choices alone): a prefill costs about its rows' worth of work, so
    a burst prefilled in small groups gives its first groups their first token sooner, and the rest
    join the batch at the following steps. Streamed text is handed
    over at most every ``stream_interval_s`` seconds (the first piece at once): a fast model's tokens
    then travel in small bunches instead of costing a thread switch and a network send each, while a
    human still sees the answer grow smoothly. 0 sends every piece on its own. ``image_prefixes`` keeps
    the KV of the last images' prompt prefixes (system prompt, image) for the requests that follow about
    the same image (None: nothing kept).
    """

    def __init__(
        self,
        engine: BatchingEngine,
        max_queue: int = 16,
        stream_interval_s: float = 0.02,
        max_batch_size: int = 8,
        batch_wait_s: float = 0.0,
        max_prefill_rows: int | None = None,
        image_prefixes: ImagePrefixCache | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise YivlError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_prefill_rows is not None and max_prefill_rows < 1:
            raise YivlError(f"max_prefill_rows must be >= 1, got {max_prefill_rows}")
        if batch_wait_s < 0:
            raise YivlError(f"batch_wait_s must be >= 0, got {batch_wait_s}")
        self.engine = engine
        self.stream_interval_s = stream_interval_s
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_s
        self.max_prefill_rows = max_prefill_rows or max_batch_size
        self._arrivals = threading.Condition()  # notified when a job is submitted or an arrival ends
        self._arriving = 0
        self._jobs: queue.Queue[Job | None] = queue.Queue(maxsize=max(1, max_queue))
        self._held: Job | None = None  # taken from the queue, waiting for room in the batch
        self._closing = False
        self.metrics = ServingMetrics(self.queue_depth, image_prefixes)
        self._thread = threading.Thread(target=self._loop, name="yivl-generation", daemon=True)
        self._thread.start()

    @property
    def keeps_image_prefixes(self) -> bool:
        """Whether the worker keeps image-prefix KV (front ends then hash images on their own threads)."""
        images = self.metrics.images
        return images is not None and images.enabled

    def queue_depth(self) -> int:
        """Jobs waiting to start."""
        return self._jobs.qsize() + (self._held is not None)

    def arriving(self) -> Arrival:
        """Announce a request that will be submitted once parsed; use as ``with worker.arriving() as a:``
        and pass ``arrival=a`` to :meth:`submit`."""
        with self._arrivals:
            self._arriving += 1
        return Arrival(self)

    def _arrived(self, arrival: Arrival) -> None:
        with self._arrivals:
            if arrival.open:
                arrival.open = False
                self._arriving -= 1
            self._arrivals.notify_all()

    def submit(
        self,
        requests: Sequence[Request],
        settings: GenerationSettings,
        sink: Callable,
        arrival: Arrival | None = None,
    ) -> Job:
        """Queue a job (ending its ``arrival``); :class:`WorkerBusy` when ``max_queue`` jobs already wait."""
        job = Job(list(requests), settings, sink)
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            raise WorkerBusy(
                f"{self._jobs.maxsize} generations are already waiting; try again in a moment"
            ) from None
        finally:
            if arrival is not None:
                self._arrived(arrival)
            elif self.batch_wait_s:
                with self._arrivals:
                    self._arrivals.notify_all()
        return job

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread after the jobs already queued."""
        self._jobs.put(None, timeout=timeout)
        self._thread.join(timeout)

    def _loop(self) -> None:
        runner = BatchRunner(self.engine, self.metrics, self.stream_interval_s, self.keeps_image_prefixes)
        while True:
            runner.admit(self._admissible(runner.size))
            if runner.size == 0 and not runner.running:
                if self._closing and self._held is None:
                    return
                continue
            runner.step()

    def _admissible(self, rows: int) -> list[Job]:
        """The waiting jobs that fit in the batch and the prefill group now (blocks for the first one
        when the batch is empty, then waits up to ``batch_wait_s`` for the requests still arriving)."""
        jobs: list[Job] = []
        gather = rows == 0 and self.batch_wait_s > 0
        deadline = 0.0
        fresh = 0  # rows of ``jobs``
        while True:
            if self._held is None:
                # a full batch or prefill group leaves the queue as is
                if self._closing or rows >= self.max_batch_size or fresh >= self.max_prefill_rows:
                    return jobs
                try:
                    self._held = self._jobs.get(block=rows == 0 and not jobs)
                except queue.Empty:
                    if gather and jobs and self._await_arrivals(deadline):
                        continue
                    return jobs
                if self._held is None:
                    self._closing = True
                    continue
            job = self._held
            if job.cancelled.is_set():
                self._held = None
                _skip(job)
                continue
            if (rows or jobs) and rows + len(job.requests) > self.max_batch_size:
                return jobs
            if jobs and fresh + len(job.requests) > self.max_prefill_rows:
                return jobs
            self._held = None
            if not jobs:
                deadline = time.monotonic() + self.batch_wait_s
            jobs.append(job)
            rows += len(job.requests)
            fresh += len(job.requests)

    def _await_arrivals(self, deadline: float) -> bool:
        """Wait until a job is queued (True) or nothing is arriving or ``deadline`` passed (False)."""
        with self._arrivals:
            while self._jobs.empty():
                left = deadline - time.monotonic()
                if self._arriving == 0 or left <= 0:
                    return False
                self._arrivals.wait(left)
            return True


def _skip(job: Job) -> None:
    """End a job cancelled while it waited: its consumer still gets its one last event."""
    deliver(job, Event("error", error=Cancelled("cancelled before it started")))


class EventStream:
    """Submit a job now (so :class:`WorkerBusy` is raised here) and iterate its events from a thread.

    Iteration ends after ``done`` or ``error``; the job is cancelled when the consumer stops early, and a
    ``TimeoutError`` event ends it when ``timeout`` seconds pass (queue wait included). ``arrival``: the
    :meth:`GenerationWorker.arriving` announcement this request ends. Text that piled
    up while the consumer was busy comes as one event, so a slow consumer costs one send, not one a token.
    """

    def __init__(
        self,
        worker: GenerationWorker,
        requests: Sequence[Request],
        settings: GenerationSettings,
        timeout: float,
        arrival: Arrival | None = None,
    ) -> None:
        self._events: queue.Queue[Event] = queue.Queue()
        self._pending: deque[Event] = deque()
        self.timeout = timeout
        self.job = worker.submit(requests, settings, self._events.put, arrival)

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
        arrival: Arrival | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._pending: deque[Event] = deque()
        self.timeout = timeout
        self.job = worker.submit(requests, settings, self._put, arrival)

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
            logprobs = event.logprobs + following.logprobs
            event = Event("text", index=event.index, delta=event.delta + following.delta, logprobs=logprobs)
        else:
            pending.append(following)
    return event


def _timed_out(timeout: float) -> Event:
    return Event("error", error=TimeoutError(f"no answer within {timeout:g} s; the server is busy"))

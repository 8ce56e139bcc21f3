"""Jobs on a continuous batch: the worker thread admits jobs between decode steps, streams their text,
and answers each job when its last row (choice) is done."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from yivl.errors import YivlError
from yivl.models.batch_decoder import BatchDecoder, Prompt, Row
from yivl.models.generation import Generation, GenerationSettings
from yivl.models.image_prefix import ImagePrefixCache
from yivl.serving.engine import Request
from yivl.serving.jobs import Cancelled, Event, Job, TextBuffer, deliver
from yivl.serving.metrics import ServingMetrics

log = logging.getLogger(__name__)


class BatchingEngine(Protocol):
    """What continuous batching needs from :class:`yivl.serving.engine.Engine`."""

    def prompt(
        self, req: Request, settings: GenerationSettings, on_text=None, key_image: bool = False
    ) -> Prompt: ...

    def batch_decoder(self, images: ImagePrefixCache | None = None) -> BatchDecoder: ...


@dataclass(eq=False)  # compared and hashed by identity
class _Running:
    """A job in the batch: its rows' keys by choice index and the answers so far (the rows stream their
    text with its logprobs through ``buffer``)."""

    job: Job
    buffer: TextBuffer
    keys: list[int] = field(default_factory=list)
    results: dict[int, Generation] = field(default_factory=dict)
    started: bool = False


def choice_settings(settings: GenerationSettings, index: int) -> GenerationSettings:
    """Choice ``index``'s settings: a seeded request's choices get seeds ``seed``, ``seed + 1``, ...
    so that they differ from each other and each is repeatable."""
    if settings.seed is None or index == 0:
        return settings
    return dataclasses.replace(settings, seed=settings.seed + index)


class BatchRunner:
    """The running batch of the worker thread; not thread-safe (the worker thread alone uses it)."""

    def __init__(
        self, engine: BatchingEngine, metrics: ServingMetrics, interval: float, key_images: bool = False
    ) -> None:
        self.engine = engine
        self.decoder = engine.batch_decoder(metrics.images)
        self.key_images = key_images  # the decoder keeps image prefixes: prompts carry image keys
        self.metrics = metrics
        self.interval = interval
        self.running: list[_Running] = []
        self._owner: dict[int, tuple[_Running, int]] = {}

    @property
    def size(self) -> int:
        """Rows in the batch."""
        return self.decoder.size

    def admit(self, jobs: Sequence[Job]) -> None:
        """Prefill ``jobs`` together and add their rows; a job that cannot start gets its error."""
        prompts: list[Prompt] = []
        runs: list[_Running] = []
        for job in jobs:
            run = _Running(job, TextBuffer(job, self.interval))
            try:
                made = [
                    self.engine.prompt(
                        req,
                        choice_settings(job.settings, i),
                        partial(run.buffer.add, i),
                        key_image=self.key_images,
                    )
                    for i, req in enumerate(job.requests)
                ]
            except Exception as exc:
                self._fail(run, exc)
                continue
            if not made:  # nothing to generate: answered at once, as generate_full answers []
                self._end(run, Event("done"))
                continue
            prompts.extend(made)
            runs.extend([run] * len(made))
        if not prompts:
            return
        known = set(self.decoder.rows)
        try:
            rows = self.decoder.add(prompts)
        except Exception as exc:
            self.decoder.remove(set(self.decoder.rows) - known)
            for run in dict.fromkeys(runs):
                self._fail(run, exc)
            return
        for run, row in zip(runs, rows, strict=True):
            self._owner[row.key] = (run, len(run.keys))
            run.keys.append(row.key)
        self.running.extend(dict.fromkeys(runs))
        self.metrics.running = self.decoder.size

    def step(self) -> None:
        """Drop cancelled jobs, run one decode step, stream it, and answer the jobs that are done."""
        for run in [r for r in self.running if r.job.cancelled.is_set()]:
            log.info("generation cancelled: the client went away")
            self.decoder.remove(set(run.keys))
            self._end(run, Event("error", error=Cancelled("cancelled")))
        if not self.running:
            return
        rows = self.decoder.size
        try:
            finished = self.decoder.step()
        except Exception as exc:  # a bug in one step must not kill the worker: fail the whole batch
            log.exception("generation failed")
            self.decoder.remove(set(self.decoder.rows))
            for run in list(self.running):
                self._end(run, Event("error", error=exc))
            return
        self.metrics.add_tokens(rows)
        now = time.monotonic()
        for run in self.running:
            if not run.started:
                run.started = True
                self.metrics.first_token(now - run.job.submitted)
        for row in finished:
            self._finish_row(row)
        self.metrics.running = self.decoder.size

    def _finish_row(self, row: Row) -> None:
        run, index = self._owner.pop(row.key)
        run.results[index] = row.result()  # its text and logprobs were all streamed by now
        if len(run.results) == len(run.keys):
            run.buffer.flush()
            self._end(run, Event("done", generations=[run.results[i] for i in range(len(run.keys))]))

    def _end(self, run: _Running, event: Event) -> None:
        for key in run.keys:
            self._owner.pop(key, None)
        if run in self.running:
            self.running.remove(run)
        deliver(run.job, event)
        self.metrics.finished()

    def _fail(self, run: _Running, exc: Exception) -> None:
        if not isinstance(exc, YivlError):
            log.exception("generation failed", exc_info=exc)
        deliver(run.job, Event("error", error=exc))
        self.metrics.finished()

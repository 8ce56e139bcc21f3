"""Ordered parallel map over processes (results come back in input order, whatever finishes first).

``multiprocessing.Pool`` never notices a worker killed by a signal (the out-of-memory killer sends
SIGKILL): it starts a replacement and waits forever for the lost task. Here every worker has its own
result pipe and the parent waits on the pipes and the workers' sentinels together, with a timeout, so
a dead worker is a :class:`WorkerDied` within a second and a stuck one a :class:`WorkerStalled`. At
most ``2 * processes`` chunks are in flight, so memory stays bounded whatever the input size.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import Connection, wait
from typing import Any

from yivl.errors import YivlError

STALL_TIMEOUT_S = 600.0
"""Longest wait for any chunk to finish before the run is declared stuck."""
POLL_S = 1.0
_JOIN_S = 5.0


class WorkerDied(YivlError):
    """A worker process ended without being asked to (killed by a signal, or exited)."""

    def __init__(self, pid: int, exitcode: int | None) -> None:
        self.pid, self.exitcode = pid, exitcode
        if exitcode is not None and exitcode < 0:
            name = signal.Signals(-exitcode).name if -exitcode in signal.valid_signals() else str(-exitcode)
            how = f"was killed by {name}"
            if -exitcode == signal.SIGKILL:
                how += (
                    " (likely the out-of-memory killer: use fewer --processes or a lower --max-image-bytes)"
                )
        else:
            how = f"exited with status {exitcode}"
        super().__init__(f"worker process {pid} {how}")


class WorkerStalled(YivlError):
    """No result came back for ``STALL_TIMEOUT_S`` seconds."""


def _worker(fn, initializer, initargs, tasks, results: Connection) -> None:
    # Ctrl-C goes to the whole process group; only the parent handles it (and stops the workers).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        initializer(*initargs)
    except Exception as err:  # e.g. the tokenizer cannot be loaded: the parent reports it
        results.send((-1, None, f"{type(err).__name__}: {err}"))
        return
    for seq, chunk in iter(tasks.get, None):
        results.send((seq, [fn(x) for x in chunk], None))


def ordered_map(
    fn: Callable[[Any], Any],
    items: Iterable,
    processes: int,
    initializer: Callable[..., None],
    initargs: tuple = (),
    chunksize: int = 16,
    stall_timeout_s: float = STALL_TIMEOUT_S,
) -> Iterator:
    """``fn`` over ``items`` in ``processes`` workers (in this process when 1), in input order.

    Raises :class:`WorkerDied` or :class:`WorkerStalled` instead of waiting forever.
    """
    if processes <= 1:
        initializer(*initargs)
        yield from map(fn, items)
        return
    pool = _Pool(fn, processes, initializer, initargs)
    try:
        yield from pool.run(iter(items), chunksize, stall_timeout_s)
    finally:
        pool.close()


class _Pool:
    """Workers fed from one task queue, each answering on its own pipe."""

    def __init__(self, fn, processes: int, initializer, initargs: tuple) -> None:
        ctx = mp.get_context()
        self.tasks = ctx.Queue()
        self.workers: list = []
        self.pipes: dict[Connection, Any] = {}
        for _ in range(processes):
            reader, writer = ctx.Pipe(duplex=False)
            proc = ctx.Process(
                target=_worker, args=(fn, initializer, initargs, self.tasks, writer), daemon=True
            )
            proc.start()
            writer.close()  # only the worker holds the write end: its death is EOF here
            self.workers.append(proc)
            self.pipes[reader] = proc
        self.window = 2 * processes
        self.finished = False

    def run(self, items: Iterator, chunksize: int, stall_timeout_s: float) -> Iterator:
        chunks = iter(lambda: list(itertools.islice(items, chunksize)), [])
        sent = done = 0
        ready: dict[int, list] = {}
        for chunk in itertools.islice(chunks, self.window):
            self.tasks.put((sent, chunk))
            sent += 1
        while done < sent:
            while done not in ready:
                seq, results = self._receive(stall_timeout_s)
                ready[seq] = results
            yield from ready.pop(done)
            done += 1
            chunk = next(chunks, None)
            if chunk is not None:
                self.tasks.put((sent, chunk))
                sent += 1
        self.finished = True

    def _receive(self, stall_timeout_s: float) -> tuple[int, list]:
        """The next finished chunk from any worker; a dead worker or a long silence raises."""
        # a monotonic deadline: a ready sentinel returns wait() at once, so counting polls could run
        # the whole timeout down in a moment while an exiting worker's status is not yet reported
        deadline = time.monotonic() + stall_timeout_s
        sentinels = {p.sentinel: p for p in self.workers}
        while time.monotonic() < deadline:
            for conn in wait([*self.pipes, *sentinels], timeout=POLL_S):
                if isinstance(conn, Connection):
                    try:
                        seq, results, error = conn.recv()
                    except (EOFError, OSError):
                        raise self._died(self.pipes[conn]) from None
                    if error is not None:
                        raise YivlError(f"a worker process could not start: {error}")
                    return seq, results
            for conn in wait(list(sentinels), timeout=0):  # a ready sentinel: that worker has exited
                raise self._died(sentinels[conn])
        raise WorkerStalled(
            f"no worker finished a chunk in {stall_timeout_s:.0f} s; an input may hang (a network "
            "mount?); check the images, then rerun"
        )

    @staticmethod
    def _died(proc) -> WorkerDied:
        proc.join(_JOIN_S)
        return WorkerDied(proc.pid, proc.exitcode)

    def close(self) -> None:
        """Stop the workers: politely after a complete run, at once otherwise; every wait bounded."""
        if self.finished:
            for _ in self.workers:
                self.tasks.put(None)
        else:
            self.tasks.cancel_join_thread()  # queued tasks are dropped, not fed to dead workers
            for proc in self.workers:
                if proc.is_alive():
                    proc.terminate()
        for proc in self.workers:
            proc.join(_JOIN_S)
            if proc.is_alive():
                proc.kill()
                proc.join(_JOIN_S)
        for conn in self.pipes:
            conn.close()
        self.tasks.close()

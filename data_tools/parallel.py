"""Ordered parallel map over processes (results come back in input order, whatever finishes first)."""

from __future__ import annotations

import multiprocessing as mp
import signal
from collections.abc import Callable, Iterable, Iterator
from typing import Any


def _init(initializer: Callable[..., None], initargs: tuple) -> None:
    # Ctrl-C goes to the whole process group; only the parent handles it (and stops the pool).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    initializer(*initargs)


def ordered_map(
    fn: Callable[[Any], Any],
    items: Iterable,
    processes: int,
    initializer: Callable[..., None],
    initargs: tuple = (),
    chunksize: int = 16,
) -> Iterator:
    """``fn`` over ``items`` in ``processes`` workers (in this process when 1), in input order."""
    if processes <= 1:
        initializer(*initargs)
        yield from map(fn, items)
        return
    with mp.get_context().Pool(processes, initializer=_init, initargs=(initializer, initargs)) as pool:
        yield from pool.imap(fn, items, chunksize=chunksize)

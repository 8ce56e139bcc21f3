"""The processes of one evaluation run: which rank this is, the start-up handshake, and the bounded
waits that tell rank 0 when another rank has finished a task, or has died.

``torchrun`` (or any launcher) sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE``.
A gloo process group is used only at start-up (rank 0 prepares the output folder and hands its
verdict to every rank); after that the ranks share nothing but files in ``<output_dir>/ranks/``:
each rank's records, a marker per finished task, and a heartbeat file (pid, host) touched every few
seconds. Every wait is bounded: by ``rank_timeout_s``, by a heartbeat that stops, or at once by a
process on this host that is gone.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from yivl.errors import YivlError

T = TypeVar("T")
HEARTBEAT_S = 2.0
SILENCE_S = 60.0
"""A rank whose heartbeat file has not been touched for this long is taken for dead."""
POLL_S = 0.2
RESUME = "rerun the same command with resume=true to continue"


class SharedError(YivlError):
    """Rank 0's error, raised on the other ranks too (only rank 0 reports it)."""


@dataclass(frozen=True)
class World:
    """This process's place in the run; ``launch`` is the id rank 0 drew for this start."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    launch: str = ""

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def share(self) -> tuple[int, int]:
        return self.rank, self.size


def world_from_env() -> World:
    """The rank and world size a launcher set (a single process when none did)."""
    size = _env_int("WORLD_SIZE", 1)
    if size < 1:
        raise YivlError(f"WORLD_SIZE={size} must be >= 1")
    rank = _env_int("RANK", 0)
    if not 0 <= rank < size:
        raise YivlError(f"RANK={rank} must be in 0..{size - 1} (WORLD_SIZE={size})")
    return World(rank, size, _env_int("LOCAL_RANK", rank), _env_int("LOCAL_WORLD_SIZE", size))


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise YivlError(f"{name}={value!r} must be an integer (set by torchrun)") from None


def rank_device(device: str, world: World, cuda_count: int) -> str:
    """The device of this rank: with N processes, ``cuda`` (or ``auto`` on a CUDA machine) is
    ``cuda:<local rank>``."""
    if not world.distributed:
        return device
    if device.startswith("cuda:"):
        raise YivlError(
            f"device={device} with {world.size} processes: give device=cuda (rank i uses cuda:<local rank i>)"
        )
    if device == "cuda" or (device == "auto" and cuda_count):
        if world.local_rank >= cuda_count:
            raise YivlError(
                f"rank {world.rank} is local rank {world.local_rank} but this machine has {cuda_count} CUDA "
                f"device(s); start at most {cuda_count} processes per machine"
            )
        return f"cuda:{world.local_rank}"
    return device


@contextmanager
def process_group(world: World, timeout_s: float) -> Iterator[World]:
    """A gloo group for the start-up handshake (none for one process); yields ``world`` with the launch
    id rank 0 drew."""
    if not world.distributed:
        yield World(launch=uuid.uuid4().hex)
        return
    import torch.distributed as dist

    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise YivlError(f"WORLD_SIZE={world.size} but {name} is not set; start the ranks with torchrun")
    try:
        dist.init_process_group("gloo", timeout=timedelta(seconds=timeout_s))
    except (RuntimeError, ValueError) as err:
        raise YivlError(
            f"rank {world.rank}: the ranks did not meet within {timeout_s:g} s ({_line(err)})"
        ) from None
    try:
        launch = _broadcast(world, lambda: uuid.uuid4().hex)
        yield World(world.rank, world.size, world.local_rank, world.local_size, launch)
    finally:
        dist.destroy_process_group()


def on_main(world: World, fn: Callable[[], T]) -> T:
    """Rank 0 runs ``fn``; every rank gets its result, or raises its YivlError (one process: just ``fn``)."""
    if not world.distributed:
        return fn()
    return _broadcast(world, fn)


def same_on_every_rank(world: World, name: str, value: str) -> None:
    """A YivlError on every rank when ranks disagree on ``value`` (e.g. a time-stamped output_dir)."""
    if not world.distributed:
        return
    import torch.distributed as dist

    values: list[Any] = [None] * world.size
    _collective(world, lambda: dist.all_gather_object(values, value))
    other = next((v for v in values if v != values[0]), None)
    if other is not None:
        raise YivlError(
            f"{name} differs between the ranks ({values[0]} on rank 0, {other} on another); "
            f"give {name}=DIR explicitly"
        )


def _broadcast(world: World, fn: Callable[[], T]) -> T:
    import torch.distributed as dist

    box: list[Any] = [None]
    if world.main:
        try:
            box[0] = ("ok", fn())
        except YivlError as err:
            box[0] = ("error", str(err))
    _collective(world, lambda: dist.broadcast_object_list(box, src=0))
    status, value = box[0]
    if status == "error":
        raise (YivlError if world.main else SharedError)(value)
    return value


def _collective(world: World, call: Callable[[], Any]) -> None:
    try:
        call()
    except (RuntimeError, ValueError) as err:  # a peer that died or never answered
        raise YivlError(
            f"rank {world.rank}: lost the other ranks at start-up ({_line(err)}); {RESUME}"
        ) from None


def _line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def ranks_dir(out_dir: Path) -> Path:
    """Where the ranks of a run keep their partial records, markers and heartbeats."""
    return out_dir / "ranks"


class Heartbeat:
    """This rank's pid and host in ``ranks/rank<r>.json``, touched every ``HEARTBEAT_S`` seconds by a
    daemon thread (it stops when the file is gone)."""

    def __init__(self, out_dir: Path, world: World) -> None:
        self.path = ranks_dir(out_dir) / f"rank{world.rank}.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "launch": world.launch}
        self.path.write_text(json.dumps(info) + "\n", encoding="utf-8")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="yivl-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                return

    def stop(self) -> None:
        self._stop.set()


def dead_rank(out_dir: Path, world: World, ranks: list[int]) -> tuple[int, str] | None:
    """The first of ``ranks`` that is gone (its process on this host) or silent (its heartbeat)."""
    host = socket.gethostname()
    for rank in ranks:
        path = ranks_dir(out_dir) / f"rank{rank}.json"
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
            age = time.time() - path.stat().st_mtime
        except (OSError, ValueError):
            return rank, "its heartbeat file is missing"
        if info.get("launch") != world.launch:
            return rank, "it never started"
        if info["host"] == host and not _alive(int(info["pid"])):
            return rank, f"process {info['pid']} is gone"
        if age > SILENCE_S:
            return rank, f"no heartbeat for {age:.0f} s"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_for(
    out_dir: Path, world: World, task: str, pending: Callable[[], list[int]], timeout_s: float
) -> None:
    """Wait until ``pending()`` (the ranks yet to finish ``task``) is empty; a one-line YivlError naming
    the rank when one died, fell silent or is not done after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while waiting := pending():
        dead = dead_rank(out_dir, world, waiting)
        if dead is not None and dead[0] in pending():  # not one that finished and exited meanwhile
            raise YivlError(f"rank {dead[0]} stopped before finishing task {task} ({dead[1]}); {RESUME}")
        if time.monotonic() > deadline:
            raise YivlError(
                f"rank {waiting[0]} has not finished task {task} {timeout_s:g} s after rank 0 did "
                f"(rank_timeout_s); {RESUME}"
            )
        time.sleep(POLL_S)


def stop_on_sigterm(out_dir: Path, world: World) -> None:
    """A launcher's SIGTERM (torchrun stops every rank when one fails) ends this rank with one line."""

    def handler(signum: int, frame: Any) -> None:
        others = [r for r in range(world.size) if r != world.rank]
        dead = dead_rank(out_dir, world, others)
        why = f"rank {dead[0]} died ({dead[1]})" if dead else "the launcher stopped the run"
        raise YivlError(f"rank {world.rank} stopped: {why}; {RESUME}")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def sync(world: World) -> None:
    """Every rank has reached this point (bounded by the group's timeout)."""
    if world.distributed:
        import torch.distributed as dist

        _collective(world, dist.barrier)

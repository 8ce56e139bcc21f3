"""``devices=N``: start the N ranks of a run on this machine (what ``torchrun --nproc-per-node N``
does) and wait for them; a rank that fails ends the others, and the error is one line."""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from yivl.errors import YivlError
from yivl.evaluation.ranks import RESUME

Run = Callable[[DictConfig], dict[str, Any]]


def run_spawned(cfg: DictConfig, run: Run) -> dict[str, Any]:
    """``run(cfg)`` in ``cfg.devices`` processes (``run`` goes to them by name); returns the summary
    rank 0 wrote."""
    import torch.multiprocessing as mp

    size = int(cfg.devices)
    # resolved once here: a time-stamped output_dir must be the same folder for every rank
    container = OmegaConf.to_container(cfg, resolve=True)
    container["devices"] = 1
    ctx = mp.get_context("spawn")
    errors = ctx.SimpleQueue()
    args = (size, _free_port(), container, errors, run)
    context = mp.start_processes(_rank_main, args=args, nprocs=size, join=False, start_method="spawn")
    try:
        while not context.join():
            pass
    except mp.ProcessExitedException as err:
        raise YivlError(_failure(err, errors)) from None
    return json.loads((Path(str(container["output_dir"])).expanduser() / "summary.json").read_text())


def _failure(err: Any, errors: Any) -> str:
    """The failed rank's own error line, else how it ended."""
    reported: dict[int, str] = {}
    while not errors.empty():
        rank, message = errors.get()
        reported.setdefault(rank, message)
    rank = err.error_index
    if rank in reported:
        return reported[rank]
    how = f"was killed by {err.signal_name}" if err.signal_name else f"exited with status {err.exit_code}"
    return f"rank {rank} {how}; {RESUME}"


def _rank_main(rank: int, size: int, port: int, container: dict[str, Any], errors: Any, run: Run) -> None:
    """One rank: the launcher's environment, then the run; a YivlError goes back to the parent."""
    env = {"RANK": rank, "LOCAL_RANK": rank, "WORLD_SIZE": size, "LOCAL_WORLD_SIZE": size}
    os.environ.update({k: str(v) for k, v in env.items()})
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    try:
        run(OmegaConf.create(container))
    except YivlError as err:
        errors.put((rank, str(err).splitlines()[0]))
        sys.exit(2)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])

"""``train.py`` in a subprocess for the multi-process tests: its own process group, so that a kill or a
timeout reaches every rank it launched, and a bounded wait."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def start_train(args: list[str], **env: str) -> subprocess.Popen:
    """``python train.py ARGS`` from the project root, output (stdout and stderr) piped as text."""
    return subprocess.Popen(
        [sys.executable, "train.py", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # one process group: a kill reaches the launched ranks too
    )


def run_train(args: list[str], timeout: float, **env: str) -> str:
    """Run ``train.py ARGS`` to the end (at most ``timeout`` s, then every rank is killed); its output.
    A non-zero exit fails the test with the output's tail."""
    proc = start_train(args, **env)
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    assert proc.returncode == 0, out[-4000:]
    return out

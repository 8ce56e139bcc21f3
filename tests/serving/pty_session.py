"""A program on a real pseudo-terminal, driven as a user would: type, paste, Ctrl-C, Ctrl-D.

The program gets the pty as its controlling terminal, so Ctrl-C (byte 0x03) reaches it as SIGINT through
the terminal, and readline sees a tty. Every wait is bounded.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]|\r")
CTRL_C, CTRL_D = b"\x03", b"\x04"
PASTE_START, PASTE_END = b"\x1b[200~", b"\x1b[201~"
# Make the pty the controlling terminal of the (session-leading) child, then run Python with the arguments.
TAKE_TERMINAL = (
    "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


class PtySession:
    """``python argv...`` on a fresh pty; :meth:`expect` reads its screen output (escape codes removed)."""

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        master, slave = os.openpty()
        environ = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "xterm", "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-c", TAKE_TERMINAL, *argv],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=ROOT,
            env={**environ, **(env or {})},
            start_new_session=True,
        )
        os.close(slave)
        self.master = master
        self.output = ""

    def send(self, data: str | bytes) -> None:
        os.write(self.master, data.encode() if isinstance(data, str) else data)

    def expect(self, text: str, timeout: float = 60.0) -> str:
        """Read until ``text`` appears after what earlier calls consumed; return everything up to it."""
        deadline = time.monotonic() + timeout
        while text not in self.output:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{text!r} did not appear within {timeout} s; the screen: {self.output!r}"
                )
            self._read(min(remaining, 0.5))
        before, _, self.output = self.output.partition(text)
        return before

    def wait_for_output(self, timeout: float) -> str:
        """Read until there is output not consumed yet; return it (and consume it)."""
        deadline = time.monotonic() + timeout
        while not self.output.strip():
            if time.monotonic() > deadline:
                raise AssertionError(f"no output within {timeout} s")
            self._read(0.2)
        shown, self.output = self.output, ""
        return shown

    def _read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # the child closed the terminal
                chunk = b""
            if not chunk and self.process.poll() is not None:
                raise AssertionError(f"the program ended; the screen: {self.output!r}")
            self.output += ANSI.sub("", chunk.decode(errors="replace"))

    def wait(self, timeout: float = 30.0) -> int:
        """The exit status once the program ends (read on, so it never blocks writing)."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            try:
                self._read(0.2)
            except AssertionError:  # it ended meanwhile
                break
        return self.process.wait(timeout=max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        os.close(self.master)

"""Reading the terminal chat's messages: line editing, history, and multi-line input a paste cannot end.

The rule for when a message is sent:

- Enter sends the message, unless the line ends in ``\\`` (the ``\\`` is dropped and the message goes on
  on the next line).
- A paste stays one message, blank lines included: a terminal with bracketed paste (readline's default)
  hands the whole paste over as one edit and Enter sends it; without it, lines that arrive together
  (the next one is already waiting when one ends) belong to the same message.
- An empty message is ignored, never a way out: ``/exit`` or Ctrl-D quits.

On a terminal, GNU readline (the standard library's ``readline``) gives arrow-key editing and history;
the history is kept in a file only when one is configured. From a pipe every line is a message.
"""

from __future__ import annotations

import os
import select
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from yivl.errors import YivlError

PROMPT = "Human: "
CONTINUATION = "  ... "
PASTE_GAP_S = 0.05  # lines closer together than this were pasted, not typed
HISTORY_LENGTH = 1000


class LineReader:
    """Messages, one per :meth:`read` call; ``EOFError`` at the end of input (Ctrl-D).

    ``read_line`` is :func:`input`-like (prompt -> line without its newline); ``more_waiting`` says
    whether the next line has already arrived (a paste in progress).
    """

    def __init__(self, read_line: Callable[[str], str], more_waiting: Callable[[], bool]) -> None:
        self.read_line = read_line
        self.more_waiting = more_waiting

    def read(self) -> str:
        """The next message (its lines joined by newlines, outer blank lines stripped); may be ''."""
        lines: list[str] = []
        prompt = PROMPT
        while True:
            line = self.read_line(prompt)
            prompt = CONTINUATION
            if line.endswith("\\"):
                lines.append(line[:-1])
                continue
            lines.append(line)
            if not self.more_waiting():
                return "\n".join(lines).strip("\n").rstrip()


def _stdin_has_data(timeout: float = PASTE_GAP_S) -> bool:
    try:
        ready, _, _ = select.select([sys.stdin], [], [], timeout)
    except (OSError, ValueError):
        return False
    return bool(ready)


@contextmanager
def terminal_reader(history_file: str | None) -> Iterator[LineReader]:
    """The reader for this process's stdin: readline editing and paste detection on a terminal, one
    message a line from a pipe; the history is loaded from and saved to ``history_file`` if given."""
    if not sys.stdin.isatty():
        yield LineReader(input, lambda: False)
        return
    try:
        import readline
    except ImportError:  # no readline on this platform: plain lines, pastes still detected
        yield LineReader(input, _stdin_has_data)
        return
    path = history_path(history_file)
    readline.set_history_length(HISTORY_LENGTH)
    if path is not None and path.is_file():
        try:
            readline.read_history_file(path)
        except OSError as exc:
            print(f"note: could not read the chat history {path}: {exc.strerror or exc}", file=sys.stderr)
    try:
        yield LineReader(input, _stdin_has_data)
    finally:
        if path is not None:
            try:
                readline.write_history_file(path)
            except OSError as exc:
                print(
                    f"note: could not save the chat history to {path}: {exc.strerror or exc}", file=sys.stderr
                )


def history_path(history_file: str | None) -> Path | None:
    """``chat.history_file`` expanded (``~`` is the user's home); its folder must exist."""
    if history_file is None or not str(history_file).strip():
        return None
    path = Path(os.path.expanduser(str(history_file)))
    if not path.parent.is_dir():
        raise YivlError(
            f"chat.history_file={history_file}: the folder {path.parent} does not exist; create it or "
            "set chat.history_file=null (history for this session only)"
        )
    return path

"""User-facing errors: one line that names the problem and the fix."""

from __future__ import annotations


class YivlError(Exception):
    """An error caused by user input (a path, a config value, a record), not by a bug.

    Entry points print ``error: <message>`` on one line and exit with status 2; no traceback.
    """


class Interrupted(Exception):
    """A run stopped by Ctrl-C after saving its state; the message says where and how to resume.

    Entry points print the message on one line and exit with status 130.
    """

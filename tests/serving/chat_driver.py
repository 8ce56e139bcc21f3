"""The terminal chat on this process's terminal, over the tiny model made slow and with a short context.

    python -m tests.serving.chat_driver MODEL_DIR LOG.jsonl CONTEXT_LENGTH DELAY_S MAX_NEW_TOKENS

Every request the model gets is appended to LOG.jsonl as ``{"turns": [[role, text], ...], "image": bool}``
(flushed at once), so a test driving the pty sees exactly what the chat sent.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from yivl.models.batch_decoder import Prompt
from yivl.models.generation import GenerationSettings
from yivl.serving.chat import Chat
from yivl.serving.chat_input import terminal_reader
from yivl.serving.engine import Engine, Request

from .helpers import SlowEngine


class LoggingEngine(SlowEngine):
    """:class:`SlowEngine` that writes each request to a JSONL file before answering it."""

    def __init__(self, engine: Engine, delay: float, log: Path) -> None:
        super().__init__(engine, delay)
        self.log = log

    def prompt(
        self,
        req: Request,
        settings: GenerationSettings,
        on_text: Callable | None = None,
        key_image: bool = False,
    ) -> Prompt:
        with self.log.open("a", encoding="utf-8") as f:
            turns = [[t.role, t.text] for t in req.turns]
            f.write(json.dumps({"turns": turns, "image": req.image is not None}) + "\n")
        return self.engine.prompt(req, settings, on_text, key_image)


def main(argv: list[str]) -> None:
    model, log, context, delay, max_new_tokens = argv
    engine = Engine.from_path(model, device="cpu", dtype="float32")
    engine.context_length = int(context)
    settings = GenerationSettings(temperature=0, max_new_tokens=int(max_new_tokens))
    chat = Chat(LoggingEngine(engine, float(delay), Path(log)), settings, timeout_s=60)
    print("ready", flush=True)
    try:
        with terminal_reader(None) as reader:
            chat.loop(reader)
    finally:
        chat.close()


if __name__ == "__main__":
    main(sys.argv[1:])

"""``infer.py mode=chat``: a conversation in the terminal (the original cli.py), kept whatever is typed.

Commands (a message of one line that is exactly one of these; they are never sent to the model):
``/help``, ``/clear`` (forget the turns, keep the image), ``/image PATH`` (a new image, a new
conversation), ``/image`` (drop the image: a text-only conversation), ``/exit`` (also ``exit``,
``quit``, ``/quit`` and Ctrl-D). Ctrl-C while an answer streams stops that answer; Ctrl-C at the
prompt drops what was typed. How a message ends (pastes, ``\\``) is in :mod:`yivl.serving.chat_input`.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from omegaconf import DictConfig
from PIL import Image

from yivl.data.chat import Turn
from yivl.data.images import load_image
from yivl.errors import YivlError
from yivl.models.generation import GenerationSettings
from yivl.models.image_prefix import ImagePrefixCache
from yivl.serving.chat_input import LineReader, terminal_reader
from yivl.serving.engine import Engine, Request
from yivl.serving.worker import EventStream, GenerationWorker

HELP = """Commands:
  /help          this list
  /clear         forget the conversation (the image stays)
  /image PATH    talk about another image (starts a new conversation)
  /image         drop the image (a text-only conversation)
  /exit          quit (also Ctrl-D)
Enter sends the message. A line ending in \\ continues on the next line; a paste stays one message,
blank lines included. Ctrl-C stops an answer while it streams; at the prompt it drops what was typed."""
QUIT = {"/exit", "/quit", "exit", "quit"}
COMMAND = re.compile(r"/[A-Za-z]+(\s.*)?", re.S)
QUIT_HINT = "(/exit or Ctrl-D quits)"


def run_chat(
    cfg: DictConfig, engine: Engine, settings: GenerationSettings, reader: LineReader | None = None
) -> None:
    """Chat on this terminal (or over ``reader``) about ``cfg.image`` (none: text only) until ``/exit``
    or Ctrl-D."""
    chat = Chat(engine, settings, float(cfg.chat.request_timeout_s))
    try:
        if cfg.image is not None:
            chat.set_image(str(cfg.image))  # a bad image fails before the first question, not after it
        about = f" about {chat.image_name}" if chat.image_name else ""
        print(f"Chatting with {cfg.model.path}{about}. /help lists the commands; /exit or Ctrl-D quits.")
        if reader is not None:
            chat.loop(reader)
            return
        with terminal_reader(cfg.chat.history_file) as terminal:
            chat.loop(terminal)
    finally:
        chat.close()


class Chat:
    """One conversation: the finished turns, the image they are about, and the worker that answers."""

    def __init__(self, engine: Engine, settings: GenerationSettings, timeout_s: float) -> None:
        self.engine = engine
        self.settings = settings
        self.timeout_s = timeout_s
        # one image at a time: every turn after the first is prefilled after its kept image prefix
        self.worker = GenerationWorker(
            engine, max_queue=4, stream_interval_s=0.0, image_prefixes=ImagePrefixCache(max_entries=2)
        )
        self.turns: list[Turn] = []
        self.image: Image.Image | None = None
        self.pixels: torch.Tensor | None = None  # the image made once: every turn sends the same tensor
        self.image_name: str | None = None

    def close(self) -> None:
        self.worker.close()

    def loop(self, reader: LineReader) -> None:
        """Read and answer messages until the user quits."""
        while True:
            try:
                message = reader.read()
            except EOFError:
                print()
                return
            except KeyboardInterrupt:
                print(f"\n{QUIT_HINT}")
                continue
            if not message.strip():
                continue
            if "\n" not in message and message.strip() in QUIT:
                return
            if "\n" not in message and COMMAND.fullmatch(message.strip()):
                self.command(message.strip())
            else:
                self.ask(message)

    def command(self, line: str) -> None:
        """Run one ``/command`` line."""
        name, _, arg = line.partition(" ")
        if name == "/help":
            print(HELP)
        elif name == "/clear":
            self.turns = []
            print("Conversation cleared" + (f"; still about {self.image_name}." if self.image_name else "."))
        elif name == "/image" and arg.strip():
            try:
                self.set_image(arg.strip())
            except YivlError as exc:
                print(f"error: {exc}")
                return
            self.turns = []
            print(
                f"Now about {self.image_name} ({self.image.width}×{self.image.height}): a new conversation."
            )
        elif name == "/image":
            self.image, self.pixels, self.image_name, self.turns = None, None, None, []
            print("No image: a new, text-only conversation.")
        else:
            print(f"unknown command {name}; /help lists the commands")

    def set_image(self, path: str) -> None:
        """Use the image at ``path`` (quotes and ``~`` allowed); YivlError naming the problem."""
        if len(path) > 1 and path[0] == path[-1] and path[0] in "'\"":
            path = path[1:-1]
        resolved = Path(path).expanduser()
        if not resolved.exists() and "\\ " in path:  # a path dragged into the terminal, spaces escaped
            resolved = Path(path.replace("\\ ", " ")).expanduser()
        image = load_image(resolved, max_pixels=self.engine.max_image_pixels)
        self.image, self.pixels = image, self.engine.preprocess(image)
        self.image_name = resolved.name

    def ask(self, question: str) -> None:
        """Send ``question`` with the conversation (the oldest turns dropped if it outgrew the context)
        and stream the answer; Ctrl-C stops it and keeps what was shown."""
        pending = self.fit([*self.turns, Turn("human", question)])
        if pending is None:
            return
        try:
            stream = EventStream(self.worker, [Request(pending, self.pixels)], self.settings, self.timeout_s)
        except YivlError as exc:  # the worker's queue is full
            print(f"error: {exc}")
            return
        print("Assistant: ", end="", flush=True)
        shown = ""
        try:
            for event in stream:
                if event.kind == "text":
                    shown += event.delta  # first: a Ctrl-C during the print still keeps it
                    print(event.delta, end="", flush=True)
                elif event.kind == "done":
                    print()
                    self.turns = [*pending, Turn("assistant", event.answers[0])]
                else:
                    print(f"\nerror: no answer: {event.error}")
        except KeyboardInterrupt:
            stream.job.cancel()
            self.stopped(pending, shown)

    def stopped(self, pending: list[Turn], shown: str) -> None:
        """After Ctrl-C: the partial answer stays in the conversation (the question goes if none)."""
        if shown.strip():
            self.turns = [*pending, Turn("assistant", shown)]
            print(f"\n[answer stopped; the part shown is kept] {QUIT_HINT}")
        else:
            print(f"\n[answer stopped before it began; the question is dropped] {QUIT_HINT}")

    def fit(self, turns: list[Turn]) -> list[Turn] | None:
        """``turns`` with the oldest exchanges dropped until the prompt leaves room for an answer of
        ``max_new_tokens`` (at most a quarter of the context); None (and why) if the question alone
        does not fit."""
        context = self.engine.context_length
        room = min(self.settings.max_new_tokens, context // 4)
        try:
            length = self._length(turns)
            dropped = 0
            while len(turns) > 1 and length + room > context:
                turns, dropped = turns[2:], dropped + 1
                length = self._length(turns)
        except YivlError as exc:
            print(f"error: {exc}")
            return None
        if length >= context:
            print(
                f"error: this message is {length} tokens{' (image included)' if self.image else ''} but the "
                f"model's context is {context}; shorten it (nothing was sent)"
            )
            return None
        if dropped:
            print(f"[the conversation outgrew the context: the oldest {dropped} exchange(s) are dropped]")
            self.turns = turns[:-1]
        return turns

    def _length(self, turns: list[Turn]) -> int:
        return self.engine.prompt_length(self.engine.prompt_ids(turns, self.image is not None))

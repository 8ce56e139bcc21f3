"""Yi-VL's one chat format: system prompt, prompt text, image-aware token ids and training labels.

Prompts are byte-identical to the original ``Conversation.get_prompt`` (``mm_default``) and token ids
to ``tokenizer_image_token`` (no BOS). Training labels are placed from character offsets on the very
tokenization used at inference; a token that crosses a label boundary is an error, never a shift.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from yivl.constants import IGNORE_INDEX, IMAGE_PLACEHOLDER, IMAGE_TOKEN_INDEX, STOP_STRING
from yivl.errors import YivlError

SYSTEM_PROMPT = (
    "This is a chat between an inquisitive human and an AI assistant. Assume the role of the AI assistant. "
    "Read all the images carefully, and respond to the human's questions with informative, helpful, "
    "detailed and polite answers. "
    "这是一个好奇的人类和一个人工智能助手之间的对话。假设你扮演这个AI助手的角色。"
    "仔细阅读所有的图像，并对人类的问题做出信息丰富、有帮助、详细的和礼貌的回答。"
)
"""The release's system prompt, exactly (303 characters, sha256 164a2196...a9a7e)."""

HUMAN = "human"
ASSISTANT = "assistant"
_SPEAKER = {HUMAN: "Human", ASSISTANT: "Assistant"}
_ROLE_ALIASES = {"human": HUMAN, "user": HUMAN, "gpt": ASSISTANT, "assistant": ASSISTANT}

Span = tuple[int, int]


class ChatFormatError(YivlError):
    """A conversation that cannot be rendered or masked exactly (names the record)."""


class SpanTokenizer(Protocol):
    """What the chat format needs from a tokenizer (``YiTokenizer`` or a test stub)."""

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no BOS)."""
        ...

    def encode_with_spans(self, text: str) -> tuple[list[int], list[Span]]:
        """Token ids and each token's character span ``[start, end)`` in ``text``."""
        ...


@dataclass(frozen=True)
class Turn:
    """One message: ``role`` is ``"human"`` or ``"assistant"``."""

    role: str
    text: str


@dataclass
class TrainingExample:
    """Token ids (``-200`` per image) and labels of the same length (``-100`` = not supervised)."""

    input_ids: list[int]
    labels: list[int]
    num_images: int


def normalize_role(raw: Any, where: str) -> str:
    """Map a record's speaker (``human``/``user``, ``gpt``/``assistant``; any case) to a role."""
    role = _ROLE_ALIASES.get(raw.strip().lower()) if isinstance(raw, str) else None
    if role is None:
        raise ChatFormatError(f"{where}: unknown role {raw!r}; use 'human' or 'user', 'gpt' or 'assistant'")
    return role


def turns_from_record(record: dict, where: str) -> list[Turn]:
    """Turns of a LLaVA/Yi-VL JSON record: ``{"conversations": [{"from": ..., "value": ...}, ...]}``."""
    conversations = record.get("conversations") if isinstance(record, dict) else None
    if not isinstance(conversations, list) or not conversations:
        raise ChatFormatError(f"{where}: needs a non-empty 'conversations' list of {{'from', 'value'}} turns")
    turns = []
    for i, message in enumerate(conversations):
        if not isinstance(message, dict) or not isinstance(message.get("value"), str):
            raise ChatFormatError(f"{where}, turn {i}: needs 'from' and a string 'value'")
        turns.append(Turn(normalize_role(message.get("from"), f"{where}, turn {i}"), message["value"]))
    return turns


def render_prompt(turns: list[Turn], system: str = SYSTEM_PROMPT, where: str = "conversation") -> str:
    """Inference prompt: the history and the final human turn, then ``"### Assistant:"``.

    Single turn: ``"{system}\\n\\n### Human: <image_placeholder>\\n{question}\\n### Assistant:"``.
    """
    text, _ = _render(_checked(turns, where, last=HUMAN), system)
    return text + f"### {_SPEAKER[ASSISTANT]}:"


def with_image_placeholder(turns: Sequence[Turn], has_image: bool) -> list[Turn]:
    """Put ``<image_placeholder>`` into the first human turn when there is an image, as the original."""
    mentions = sum(t.text.count(IMAGE_PLACEHOLDER) for t in turns)
    if not has_image:
        if mentions:
            raise YivlError(
                f"the conversation contains {IMAGE_PLACEHOLDER} but no image was given; pass image=PATH"
            )
        return list(turns)
    if mentions > 1:
        raise YivlError(
            f"{IMAGE_PLACEHOLDER} appears {mentions} times; Yi-VL takes one image per conversation"
        )
    out = list(turns)
    if not mentions:
        out[0] = Turn(role=out[0].role, text=f"{IMAGE_PLACEHOLDER}\n{out[0].text}")
    return out


def tokenize_prompt(tokenizer: SpanTokenizer, prompt: str) -> list[int]:
    """Token ids of ``prompt``: chunks between placeholders encoded separately, joined by ``-200``."""
    ids: list[int] = []
    for i, chunk in enumerate(prompt.split(IMAGE_PLACEHOLDER)):
        if i:
            ids.append(IMAGE_TOKEN_INDEX)
        ids.extend(tokenizer.encode(chunk))
    return ids


def training_text(turns: list[Turn], system: str = SYSTEM_PROMPT, where: str = "conversation") -> str:
    """The text a conversation ending with an assistant reply trains on (what
    :func:`build_training_example` tokenizes): each reply filled in, then a final ``"###"``."""
    return _render(_checked(turns, where, last=ASSISTANT), system)[0] + STOP_STRING


def expanded_length(ids: Sequence[int], image_tokens: int) -> int:
    """Sequence length the LLM sees once each ``-200`` id in ``ids`` becomes ``image_tokens`` features."""
    images = sum(1 for i in ids if i == IMAGE_TOKEN_INDEX)
    return len(ids) + images * (image_tokens - 1)


def build_training_example(
    tokenizer: SpanTokenizer, turns: list[Turn], system: str = SYSTEM_PROMPT, sample_id: str = "?"
) -> TrainingExample:
    """Token ids and labels of a conversation that ends with an assistant reply.

    The text is the inference rendering with each reply filled in and a final ``"###"``. Supervised
    are exactly the tokens of ``" " + reply + "\\n###"`` for every reply; the rest is ``-100``.
    """
    where = f"sample {sample_id}"
    text, supervised = _render(_checked(turns, where, last=ASSISTANT), system)
    text += STOP_STRING
    ids, spans = _encode_with_spans(tokenizer, text)
    labels = _labels(ids, spans, supervised, text, where)
    return TrainingExample(ids, labels, ids.count(IMAGE_TOKEN_INDEX))


def _checked(turns: list[Turn], where: str, last: str) -> list[Turn]:
    """Validate a conversation and return it with canonical roles; ChatFormatError naming ``where``."""
    if not turns:
        raise ChatFormatError(f"{where}: the conversation is empty; give at least one human turn")
    out = [Turn(normalize_role(t.role, f"{where}, turn {i}"), t.text) for i, t in enumerate(turns)]
    for i, turn in enumerate(out):
        _check_order(out, i, where)
        _check_text(turn, f"{where}, turn {i}")
    images = sum(t.text.count(IMAGE_PLACEHOLDER) for t in out)
    if images > 1:
        raise ChatFormatError(f"{where}: {images} image placeholders; Yi-VL takes one image per conversation")
    if out[-1].role != last:
        if last == ASSISTANT:
            raise ChatFormatError(f"{where}: ends with a question; add its reply or drop the question")
        raise ChatFormatError(f"{where}: ends with an assistant reply; end with a human question")
    return out


def _check_order(turns: list[Turn], i: int, where: str) -> None:
    """Turns alternate human/assistant, starting with human."""
    role = turns[i].role
    if i == 0 and role != HUMAN:
        raise ChatFormatError(
            f"{where}: the conversation starts with an assistant turn; start with a human one"
        )
    if i > 0 and role == turns[i - 1].role:
        raise ChatFormatError(
            f"{where}: two {role} turns in a row (turns {i - 1} and {i}); alternate human and assistant"
        )


def _check_text(turn: Turn, where: str) -> None:
    """No empty question or reply; the image placeholder only in human turns."""
    if not isinstance(turn.text, str):
        raise ChatFormatError(f"{where}: the message must be a string, got {type(turn.text).__name__}")
    if turn.role == ASSISTANT:
        if IMAGE_PLACEHOLDER in turn.text:
            raise ChatFormatError(
                f"{where}: {IMAGE_PLACEHOLDER} in an assistant reply; only questions hold it"
            )
        if not turn.text.strip():
            raise ChatFormatError(f"{where}: empty assistant reply; fill it in or drop the turn")
    elif not turn.text.replace(IMAGE_PLACEHOLDER, "").strip():
        raise ChatFormatError(f"{where}: empty question; ask something about the image")


def _question(text: str) -> str:
    """A human message as the original renders it: the placeholder moved to the front, then a newline."""
    if IMAGE_PLACEHOLDER not in text:
        return text
    return IMAGE_PLACEHOLDER + "\n" + text.replace(IMAGE_PLACEHOLDER, "").strip()


def _render(turns: list[Turn], system: str) -> tuple[str, list[Span]]:
    """Text of ``system`` and ``turns`` ("### Role: message\\n" each) and each reply's supervised span.

    A reply's span is ``" " + reply + "\\n###"``: its "###" is the one the next turn (or the final
    stop string) starts with.
    """
    parts = [system, "\n\n"]
    length = len(system) + 2
    supervised: list[Span] = []
    for turn in turns:
        if turn.role == HUMAN:
            part = f"### {_SPEAKER[HUMAN]}: {_question(turn.text)}\n"
        else:
            head = f"### {_SPEAKER[ASSISTANT]}:"
            part = f"{head} {turn.text}\n"
            supervised.append((length + len(head), length + len(part) + len(STOP_STRING)))
        parts.append(part)
        length += len(part)
    return "".join(parts), supervised


def _encode_with_spans(tokenizer: SpanTokenizer, text: str) -> tuple[list[int], list[Span]]:
    """``tokenize_prompt`` ids of ``text`` with each token's character span in ``text``."""
    ids: list[int] = []
    spans: list[Span] = []
    pos = 0
    for i, chunk in enumerate(text.split(IMAGE_PLACEHOLDER)):
        if i:
            ids.append(IMAGE_TOKEN_INDEX)
            spans.append((pos, pos + len(IMAGE_PLACEHOLDER)))
            pos += len(IMAGE_PLACEHOLDER)
        chunk_ids, chunk_spans = tokenizer.encode_with_spans(chunk)
        ids.extend(chunk_ids)
        spans.extend((pos + s, pos + e) for s, e in chunk_spans)
        pos += len(chunk)
    return ids, spans


def _labels(ids: list[int], spans: list[Span], supervised: list[Span], text: str, where: str) -> list[int]:
    """Each token's id if its span lies inside a supervised span, else ``-100``.

    One sweep: token spans and supervised spans are both in text order. An empty span (a leading
    byte-fallback piece) belongs to the character that starts at its position.
    """
    labels = [IGNORE_INDEX] * len(ids)
    k, count = 0, len(supervised)
    for i, (token, (s, e)) in enumerate(zip(ids, spans, strict=True)):
        while k < count and supervised[k][1] <= s:
            k += 1  # supervised span k ends at or before this token
        if k == count:
            continue
        first, last = supervised[k]
        if s >= first and e <= last:
            if token != IMAGE_TOKEN_INDEX:
                labels[i] = token
        elif e > first:
            raise ChatFormatError(
                f"{where}: token {i} {text[s:e]!r} (chars {s}-{e}) crosses the edge of a reply, so the "
                "reply cannot be masked exactly; edit the text around it or skip the sample"
            )
    return labels

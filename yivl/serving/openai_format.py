"""The OpenAI chat-completions request, and its messages turned into a Yi-VL conversation.

Yi-VL sees one image per conversation, in front of the first human turn, under one system prompt (its
own unless the caller's system message replaces it); these rules decide how an OpenAI message list maps
onto that and refuse what does not fit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from yivl.constants import IMAGE_PLACEHOLDER
from yivl.data.chat import SYSTEM_PROMPT, Turn
from yivl.models.generation import MAX_TOP_LOGPROBS
from yivl.serving.api_errors import ApiError, bad_request

MAX_STOP_STRINGS = 4
ROLES = {"user": "human", "assistant": "assistant"}
SYSTEM_ROLES = {"system", "developer"}
SystemPolicy = Literal["use", "ignore", "reject"]
UnsupportedPolicy = Literal["error", "warn"]
SEED_RANGE = (-(2**63), 2**63)
"""OpenAI's seed is a signed 64-bit integer; torch's generator takes every value in it."""

PASSED_THROUGH = frozenset({"logprobs", "top_logprobs", "top_k", "frequency_penalty", "presence_penalty"})
"""Request fields accepted here though this module does not read them (the generation settings do)."""
NO_EFFECT = frozenset({"user", "metadata", "store", "service_tier"})
"""Bookkeeping fields that change nothing in an answer: accepted and ignored, as a local server may."""
MESSAGE_FIELDS = frozenset({"role", "content", "name"})
PART_FIELDS = frozenset({"type", "text", "image_url"})
IMAGE_URL_FIELDS = frozenset({"url", "detail"})
STREAM_OPTION_FIELDS = frozenset({"include_usage"})
DETAILS_IGNORED = frozenset({"auto"})
"""``image_url.detail`` values answered as asked: Yi-VL sees every image at one resolution, which is what
OpenAI's default ``auto`` leaves to the server; ``low`` and ``high`` ask for what it cannot do."""

log = logging.getLogger(__name__)


STRICT = ConfigDict(extra="allow", strict=True)
"""No coercion: ``"max_tokens": "5"`` and ``"stream": "yes"`` are refused, not guessed at."""


class ImageURL(BaseModel):
    model_config = STRICT
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ContentPart(BaseModel):
    model_config = STRICT
    type: str
    text: str | None = None
    image_url: ImageURL | None = None


class ChatMessage(BaseModel):
    model_config = STRICT
    role: str
    content: str | list[ContentPart] | None = None


class StreamOptions(BaseModel):
    model_config = STRICT
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The fields of ``POST /v1/chat/completions`` that this server uses; :func:`unsupported_fields`
    names the others."""

    model_config = STRICT
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    # allow_inf_nan: the JSON parser reads NaN and Infinity; "must be finite" says why they are refused
    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(default=None, gt=0, le=1, allow_inf_nan=False)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1)
    seed: int | None = Field(default=None, ge=SEED_RANGE[0], lt=SEED_RANGE[1])
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    top_k: int | None = Field(default=None, ge=-1)  # extension (as vLLM's): -1 or 0 turns it off
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2, allow_inf_nan=False)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2, allow_inf_nan=False)

    def stop_strings(self) -> tuple[str, ...]:
        """The caller's stop strings: at most four, as OpenAI allows, none empty (an empty one would
        match before the first token); HTTP 400 ``invalid_value`` otherwise."""
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOP_STRINGS:
            raise invalid_value(f"stop has {len(stops)} strings; at most {MAX_STOP_STRINGS}", "stop")
        if not all(stops):
            raise invalid_value(
                "stop holds an empty string; remove it (stop strings must not be empty)", "stop"
            )
        return tuple(stops)

    def check(self) -> None:
        """What the field types cannot say: the stop strings, and top_logprobs only with logprobs."""
        self.stop_strings()
        if self.top_logprobs is not None and not self.logprobs:
            raise invalid_value("top_logprobs needs logprobs=true; set both", "top_logprobs")


@dataclass(frozen=True)
class ImageRef:
    """An image_url part: its URL and where it was in the request (for error messages)."""

    url: str
    param: str


def parse_request(body: bytes, unsupported: UnsupportedPolicy = "error") -> ChatRequest:
    """Raw body -> :class:`ChatRequest`; malformed JSON or fields -> HTTP 400 naming the field.

    pydantic's own JSON parser reads the body: it refuses invalid UTF-8, lone surrogates (``"\\ud800"``)
    and nesting deeper than its recursion limit, wherever they are, before any of it reaches Python.
    A field this server does not implement is HTTP 400 ``unsupported_parameter`` (``warn``: a log line).
    """
    try:
        chat = ChatRequest.model_validate_json(body)
    except ValidationError as exc:
        raise _invalid(exc) from None
    chat.check()
    for param in unsupported_fields(chat):
        if unsupported == "warn":
            log.warning("ignoring %s: this server does not implement it (api.unsupported_fields=warn)", param)
            continue
        raise ApiError(
            400,
            f"{param} is not supported by this server; remove it (or start the server with "
            "api.unsupported_fields=warn to have it ignored)",
            param=param,
            code="unsupported_parameter",
        )
    return chat


def unsupported_fields(chat: ChatRequest) -> list[str]:
    """The fields of ``chat`` that nothing here implements, at every level (top, messages, content parts,
    their ``image_url``, ``stream_options``), as full paths (``messages[0].content[1].image_url.detail``),
    top level first, then message by message.

    A field sent as null, ``[]`` or ``{}`` asks for nothing and is let through: clients that echo an
    assistant message back send ``"tool_calls": null``. ``image_url.detail`` other than ``auto`` is one.
    """
    names = _set_extras(chat, PASSED_THROUGH | NO_EFFECT, "")
    if chat.stream_options is not None:
        names += _set_extras(chat.stream_options, STREAM_OPTION_FIELDS, "stream_options.")
    for i, message in enumerate(chat.messages):
        names += _set_extras(message, MESSAGE_FIELDS, f"messages[{i}].")
        for j, part in enumerate(message.content if isinstance(message.content, list) else []):
            where = f"messages[{i}].content[{j}]"
            names += _set_extras(part, PART_FIELDS, f"{where}.")
            if part.image_url is not None:
                names += _set_extras(part.image_url, IMAGE_URL_FIELDS, f"{where}.image_url.")
                detail = part.image_url.detail
                if detail is not None and detail not in DETAILS_IGNORED:
                    names.append(f"{where}.image_url.detail")
    return names


def _set_extras(model: BaseModel, known: frozenset[str], prefix: str) -> list[str]:
    extra = model.model_extra or {}
    return [
        f"{prefix}{name}"
        for name, value in extra.items()
        if name not in known and value not in (None, [], {})
    ]


def _invalid(exc: ValidationError) -> ApiError:
    first = exc.errors(include_input=False, include_url=False)[0]
    if first["type"] == "json_invalid":
        reason = first["ctx"]["error"] if "ctx" in first else first["msg"]
        return bad_request(f"the request body is not valid JSON: {reason}", code="invalid_json")
    if not first["loc"]:
        return bad_request("the request body must be a JSON object", code="invalid_json")
    # a union (content: a string or parts) reports each branch; the deepest error names the field
    same_field = [
        e for e in exc.errors(include_input=False, include_url=False) if e["loc"][:1] == first["loc"][:1]
    ]
    first = max(same_field, key=lambda e: len(e["loc"]))
    param = _param_name(first["loc"])
    return bad_request(f"{param}: {first['msg']}", param=param, code="invalid_value")


def _param_name(loc: tuple) -> str:
    """Pydantic location -> OpenAI-style ``messages[0].content``; union branch names are left out."""
    name = ""
    for part in loc:
        if isinstance(part, int):
            name += f"[{part}]"
        elif part not in ("str", "list[ContentPart]", "list[str]", "function-after"):
            name += f".{part}" if name else str(part)
    return name


@dataclass(frozen=True)
class Conversation:
    """An OpenAI message list as Yi-VL sees it: turns, the one image, and the system prompt to render."""

    turns: list[Turn]
    image: ImageRef | None = None
    system: str = SYSTEM_PROMPT


def to_conversation(messages: list[ChatMessage], system: SystemPolicy = "use") -> Conversation:
    """OpenAI messages -> Yi-VL turns (consecutive same-role messages joined) and the one image, if any.

    System (and developer) messages, per ``system``: ``use`` puts the leading ones, joined by newlines,
    in place of Yi-VL's system prompt; ``ignore`` drops them; ``reject`` refuses them. HTTP 400 for: a
    system message after the conversation started, a role Yi-VL has no place for, no user message, a last
    message that is not the user's, more than one image, an image outside a user message, text that
    spells the image placeholder.
    """
    turns: list[Turn] = []
    prompts: list[str] = []
    image: ImageRef | None = None
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        if message.role in SYSTEM_ROLES:
            if system != "ignore":
                prompts.append(_system_text(message, param, system, started=bool(turns)))
            continue
        if message.role not in ROLES:
            raise bad_request(
                f"{param}: role '{message.role}' is not supported; use user or assistant",
                param=f"{param}.role",
                code="unsupported_role",
            )
        text, found = _content(message, param)
        if found is not None:
            if image is not None:
                raise bad_request(
                    f"{found.param}: Yi-VL takes one image per conversation, and {image.param} is already "
                    "one; send one image (start a new conversation for another)",
                    param=found.param,
                    code="too_many_images",
                )
            image = found
        _append(turns, ROLES[message.role], text)
    _check_turns(turns)
    return Conversation(turns, image, "\n".join(prompts) if prompts else SYSTEM_PROMPT)


def _system_text(message: ChatMessage, param: str, policy: SystemPolicy, started: bool) -> str:
    """The text of a system message that ``policy`` (use or reject) lets through; HTTP 400 otherwise."""
    if policy == "reject":
        raise bad_request(
            f"{param}: this server answers under Yi-VL's own system prompt and takes no {message.role} "
            "message; remove it (or start the server with api.system_messages=use or ignore)",
            param=f"{param}.role",
            code="unsupported_role",
        )
    if started:
        raise bad_request(
            f"{param}: a {message.role} message must come before the first user or assistant message "
            "(Yi-VL has one system prompt per conversation); move it to the front",
            param=f"{param}.role",
            code="misplaced_system_message",
        )
    return _content(message, param)[0]


def _content(message: ChatMessage, param: str) -> tuple[str, ImageRef | None]:
    """A message's text (text parts joined by newlines) and its image part, if any."""
    content = message.content
    if content is None or isinstance(content, str):
        return _checked_text(content or "", f"{param}.content"), None
    texts: list[str] = []
    image: ImageRef | None = None
    for j, part in enumerate(content):
        where = f"{param}.content[{j}]"
        if part.type == "text" and part.text is not None:
            texts.append(_checked_text(part.text, f"{where}.text"))
        elif part.type == "image_url" and part.image_url is not None:
            if message.role != "user":
                raise bad_request(
                    f"{where}: only user messages can hold images",
                    param=where,
                    code="unsupported_content",
                )
            if image is not None:
                raise bad_request(
                    f"{where}: Yi-VL takes one image per conversation and {image.param} is already one",
                    param=where,
                    code="too_many_images",
                )
            image = ImageRef(part.image_url.url, f"{where}.image_url")
        else:
            raise bad_request(
                f"{where}: content part type '{part.type}' is not supported; use text or image_url",
                param=f"{where}.type",
                code="unsupported_content",
            )
    return "\n".join(texts), image


def _checked_text(text: str, param: str) -> str:
    if IMAGE_PLACEHOLDER in text:
        raise bad_request(
            f"{param}: the text contains {IMAGE_PLACEHOLDER}; send the image as an image_url part instead",
            param=param,
            code="invalid_value",
        )
    return text


def _append(turns: list[Turn], role: str, text: str) -> None:
    """Add a turn; a message from the same role as the last one continues it (Yi-VL turns alternate)."""
    if turns and turns[-1].role == role:
        turns[-1] = Turn(role, f"{turns[-1].text}\n{text}")
    else:
        turns.append(Turn(role, text))


def _check_turns(turns: list[Turn]) -> None:
    """HTTP 400 ``invalid_conversation`` for a message list Yi-VL cannot answer."""

    def refuse(message: str) -> ApiError:
        return bad_request(message, param="messages", code="invalid_conversation")

    if not any(t.role == "human" for t in turns):
        raise refuse("messages holds no user message; add one with the question")
    if turns[-1].role != "human":
        raise refuse("the last message must be the user's question")
    if not turns[-1].text.strip():
        raise refuse("the last user message has no text; ask a question")


def invalid_value(message: str, param: str) -> ApiError:
    """HTTP 400 ``invalid_value``: a field's value is out of its range (``param`` names it)."""
    return bad_request(message, param=param, code="invalid_value")


def model_not_found(name: str, served: str) -> ApiError:
    """HTTP 404 for a model name this server does not serve."""
    return ApiError(
        404,
        f"the model '{name}' does not exist here; this server serves '{served}' (see GET /v1/models)",
        param="model",
        code="model_not_found",
    )

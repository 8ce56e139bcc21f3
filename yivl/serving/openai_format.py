"""The OpenAI chat-completions request, and its messages turned into a Yi-VL conversation.

Yi-VL sees one image per conversation, in front of the first human turn, under one system prompt (its
own unless the caller's system message replaces it); these rules decide how an OpenAI message list maps
onto that and refuse what does not fit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from yivl.constants import IMAGE_PLACEHOLDER
from yivl.data.chat import SYSTEM_PROMPT, Turn
from yivl.models.generation import MAX_TOP_LOGPROBS
from yivl.serving.api_errors import ApiError, bad_request

MAX_STOP_STRINGS = 4
ROLES = {"user": "human", "assistant": "assistant"}
SYSTEM_ROLES = {"system", "developer"}
SystemPolicy = Literal["use", "ignore", "reject"]


class ImageURL(BaseModel):
    model_config = ConfigDict(extra="allow")
    url: str
    detail: str | None = None


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None
    image_url: ImageURL | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[ContentPart] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The fields of ``POST /v1/chat/completions`` that this server uses; others are accepted and ignored."""

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1)
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    top_k: int | None = Field(default=None, ge=-1)  # extension (as vLLM's): -1 or 0 turns it off
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)

    def stop_strings(self) -> tuple[str, ...]:
        """The caller's stop strings (at most four, as OpenAI allows), empty ones dropped."""
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOP_STRINGS:
            raise bad_request(f"stop has {len(stops)} strings; at most {MAX_STOP_STRINGS}", param="stop")
        return tuple(s for s in stops if s)


@dataclass(frozen=True)
class ImageRef:
    """An image_url part: its URL and where it was in the request (for error messages)."""

    url: str
    param: str


def parse_request(body: bytes) -> ChatRequest:
    """Raw body -> :class:`ChatRequest`; malformed JSON or fields -> HTTP 400 naming the field."""
    try:
        payload: Any = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise bad_request("the request body must be a JSON object", code="invalid_json")
    try:
        return ChatRequest.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = _param_name(first["loc"])
        raise bad_request(f"{param}: {first['msg']}", param=param, code="invalid_value") from None


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
                raise bad_request(f"{where}: only user messages can hold images", param=where)
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
        )
    return text


def _append(turns: list[Turn], role: str, text: str) -> None:
    """Add a turn; a message from the same role as the last one continues it (Yi-VL turns alternate)."""
    if turns and turns[-1].role == role:
        turns[-1] = Turn(role, f"{turns[-1].text}\n{text}")
    else:
        turns.append(Turn(role, text))


def _check_turns(turns: list[Turn]) -> None:
    if not any(t.role == "human" for t in turns):
        raise bad_request("messages holds no user message; add one with the question", param="messages")
    if turns[-1].role != "human":
        raise bad_request("the last message must be the user's question", param="messages")
    if not turns[-1].text.strip():
        raise bad_request("the last user message has no text; ask a question", param="messages")


def model_not_found(name: str, served: str) -> ApiError:
    """HTTP 404 for a model name this server does not serve."""
    return ApiError(
        404,
        f"the model '{name}' does not exist here; this server serves '{served}' (see GET /v1/models)",
        param="model",
        code="model_not_found",
    )

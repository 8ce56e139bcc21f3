"""OpenAI-style error responses: ``{"error": {"message", "type", "param", "code"}}`` with a 4xx/5xx status."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from yivl.errors import YivlError
from yivl.serving.worker import Cancelled


class ApiError(Exception):
    """An error to send back as an OpenAI-style body; ``param`` names the offending field."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.headers = dict(headers or {})
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind or error_type(status)

    def body(self) -> dict:
        """The JSON body OpenAI clients parse into their exception's ``body``/``code``/``param``."""
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else {}
        return JSONResponse(self.body(), status_code=self.status, headers={**headers, **self.headers})


def error_type(status: int) -> str:
    """OpenAI's ``type`` for a status: client errors are ``invalid_request_error``."""
    if status == 401:
        return "authentication_error"
    if status == 429:
        return "rate_limit_error"
    return "invalid_request_error" if status < 500 else "server_error"


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    """HTTP 400 with ``message``."""
    return ApiError(400, message, param=param, code=code)


def as_api_error(error: BaseException | None) -> ApiError:
    """A worker failure -> the HTTP error that describes it."""
    if isinstance(error, YivlError):
        return bad_request(str(error), code="invalid_request")
    if isinstance(error, TimeoutError):
        return ApiError(504, str(error), code="timeout")
    if isinstance(error, Cancelled):
        return ApiError(499, "the request was cancelled", code="cancelled")
    return ApiError(500, f"generation failed: {type(error).__name__}: {error}", code="internal_error")


RETRY_AFTER_S = "1"
"""The ``Retry-After`` of a 503: the queue moves at the pace of generation steps, so soon."""


def server_busy(message: str) -> ApiError:
    """HTTP 503 ``server_busy`` with ``Retry-After``, for a full queue or full parsing slots."""
    return ApiError(503, message, code="server_busy", headers={"Retry-After": RETRY_AFTER_S})

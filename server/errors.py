"""Errors: one OpenAI-style body and an explicit exception -> HTTP status map.

Why explicit: an RL trainer must be able to tell "the reward is 0" from "the reward could not be
computed". Every failure here is an HTTP error with the body
``{"error": {"message", "type", "param", "code"}}`` (the shape the ``openai`` client parses);
no failure is ever turned into a reward.

| exception                                   | status | type                  |
|---------------------------------------------|--------|-----------------------|
| malformed JSON, semantic request errors     | 400    | invalid_request_error |
| missing / wrong API key                     | 401    | authentication_error  |
| unknown model name                          | 404    | not_found_error       |
| body / items / reasoning / steps over limit | 413    | invalid_request_error |
| schema validation (pydantic)                | 422    | invalid_request_error |
| backend / judge / unexpected failure        | 500    | backend_error, judge_error, internal_error |
| chat on a backend without a chat model      | 501    | not_implemented_error |
| queue full, shutting down                   | 503    | overloaded_error (Retry-After) |
| request exceeded the time limit             | 504    | timeout_error         |

Example::

    >>> from server.errors import QueueFull, error_body
    >>> e = QueueFull("queue is full", retry_after=2)
    >>> e.status, e.headers["Retry-After"], error_body(e)["error"]["code"]
    (503, '2', 'queue_full')
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("gsrm.server")


class ApiError(Exception):
    """An error with its HTTP status and OpenAI-style fields."""

    status: int = 500
    type: str = "internal_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 status: int | None = None, type: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        self.headers = dict(headers or {})


class BadRequest(ApiError):
    status, type, code = 400, "invalid_request_error", "invalid_request"


class Unauthorized(ApiError):
    status, type, code = 401, "authentication_error", "invalid_api_key"

    def __init__(self, message: str = "missing or invalid API key: send "
                 "'Authorization: Bearer <key>'", **kw: Any) -> None:
        kw.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(message, **kw)


class ModelNotFound(ApiError):
    status, type, code = 404, "not_found_error", "model_not_found"


class PayloadTooLarge(ApiError):
    status, type, code = 413, "invalid_request_error", "payload_too_large"


class ValidationFailed(ApiError):
    status, type, code = 422, "invalid_request_error", "validation_error"


class ChatNotSupported(ApiError):
    status, type, code = 501, "not_implemented_error", "chat_not_supported"


class Unavailable(ApiError):
    """503 with Retry-After: the client should try again later."""

    status, type, code = 503, "overloaded_error", "unavailable"

    def __init__(self, message: str, *, retry_after: int = 1, **kw: Any) -> None:
        kw.setdefault("headers", {"Retry-After": str(max(0, int(retry_after)))})
        super().__init__(message, **kw)


class QueueFull(Unavailable):
    code = "queue_full"


class ShuttingDown(Unavailable):
    code = "shutting_down"


class RequestTimeout(ApiError):
    status, type, code = 504, "timeout_error", "request_timeout"


def error_body(err: ApiError) -> dict[str, Any]:
    """The OpenAI-style error body for ``err``."""
    return {"error": {"message": err.message, "type": err.type, "param": err.param,
                      "code": err.code}}


def error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(error_body(err), status_code=err.status, headers=err.headers or None)


def to_api_error(exc: BaseException) -> ApiError:
    """Map any exception to an ApiError (the explicit table in this module's docstring)."""
    if isinstance(exc, ApiError):
        return exc
    from gsrm.backends import BackendError
    from gsrm.judges import JudgeError

    name = type(exc).__name__
    if isinstance(exc, BackendError):
        return ApiError(f"decomposition backend failed: {exc}", status=500,
                        type="backend_error", code="backend_error")
    if isinstance(exc, JudgeError):
        return ApiError(f"judge failed: {exc}", status=500, type="judge_error",
                        code="judge_error")
    if name == "WeightsNotFoundError":
        return ApiError(f"model weights not found: {exc}", status=500, type="backend_error",
                        code="weights_not_found")
    return ApiError(f"internal server error ({name}): {exc}", status=500,
                    type="internal_error", code="internal_error")


_STATUS_TYPES = {400: ("invalid_request_error", "invalid_request"),
                 401: ("authentication_error", "invalid_api_key"),
                 404: ("not_found_error", "not_found"),
                 405: ("invalid_request_error", "method_not_allowed"),
                 413: ("invalid_request_error", "payload_too_large"),
                 415: ("invalid_request_error", "unsupported_media_type")}


#: pydantic names union members in error locations ("teacher.str", "teacher.list[Step].0");
#: those tags are not fields and are dropped from ``param``
_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none", "Step", "Trace",
                        "TextPart"})


def _is_tag(p: Any) -> bool:
    return isinstance(p, str) and (not p.isidentifier() or p in _TYPE_TAGS)


def _loc(loc: Any) -> str | None:
    parts = [str(p) for p in loc if p != "body" and not _is_tag(p)]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or None


def validation_error(exc: RequestValidationError) -> ApiError:
    """400 for unparseable JSON, 422 for a body that parses but does not fit the schema."""
    errors = exc.errors()
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        ctx = first.get("ctx") or {}
        return BadRequest(f"request body is not valid JSON: {ctx.get('error', 'decode error')}",
                          code="invalid_json")
    # a union reports one error per member; the deepest location is the most specific one
    errors = sorted(errors, key=lambda e: -len(e.get("loc", ())))
    first = errors[0] if errors else {}
    msgs = []
    for e in errors[:5]:
        where = _loc(e.get("loc", ())) or "body"
        msgs.append(f"{where}: {str(e.get('msg', 'invalid')).removeprefix('Value error, ')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return ValidationFailed("; ".join(msgs) + more, param=_loc(first.get("loc", ())))


def install_handlers(app: FastAPI) -> None:
    """Route every error FastAPI/Starlette can raise to the one error body."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        typ, code = _STATUS_TYPES.get(exc.status_code, ("invalid_request_error", None))
        if exc.status_code >= 500:
            typ, code = "internal_error", "internal_error"
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such endpoint: {request.method} {request.url.path}"
        err = ApiError(detail, status=exc.status_code, type=typ, code=code,
                       headers=dict(exc.headers or {}))
        return error_response(err)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(to_api_error(exc))

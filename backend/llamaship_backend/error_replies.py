"""Every error reply is OpenAI-style JSON (`schemas.ErrorReply`):
`{"error": {"message", "type", "code", "param"}}`."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from llamaship_backend.errors import BackendError
from llamaship_backend.schemas import ErrorDetail, ErrorReply
from llamaship_contract.errors import LlamashipError

logger = logging.getLogger(__name__)


# Every route's error replies, for the OpenAPI document (`APIRouter(responses=...)`); it also
# stands in for FastAPI's own 422 shape, which `_validation_error` replaces.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorReply, "description": "The request was refused (`error.code` says why)"},
    "5XX": {"model": ErrorReply, "description": "The server or llama.cpp failed"},
}


def error_response(
    status_code: int,
    message: str,
    error_type: str,
    code: str,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The error reply with `status_code` (and extra `headers`)."""
    detail = ErrorDetail(message=message, type=error_type, code=code, param=param)
    body = ErrorReply(error=detail).model_dump(mode="json")
    return JSONResponse(body, status_code=status_code, headers=headers)


def _field_name(location: Sequence[str | int]) -> str:
    """`("body", "messages", 0, "content")` -> `messages[0].content`."""
    name = ""
    for part in location[1:] if location[:1] == ("body",) else location:
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            name += f".{part}" if name else part
    return name


def describe_validation_errors(errors: Sequence[Any]) -> tuple[int, str, str, str | None]:
    """Status, code, message and first field of a request that failed validation."""
    for error in errors:
        if error.get("type") == "json_invalid":
            reason = error.get("ctx", {}).get("error", "invalid JSON")
            position = error["loc"][-1]
            message = f"The request body is not valid JSON: {reason} (at character {position})."
            return 400, "invalid_json", message, None
    problems = []
    fields = []
    for error in errors:
        field = _field_name(error.get("loc", ()))
        fields.append(field)
        if not field:
            problems.append(
                "the request body must be a JSON object sent with "
                f"Content-Type: application/json ({error.get('msg', 'invalid')})"
            )
        else:
            problems.append(f"{field}: {error.get('msg', 'invalid')}")
    message = "Invalid request: " + "; ".join(problems) + "."
    return 422, "invalid_request", message, (fields[0] or None) if fields else None


async def _backend_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, BackendError)
    logger.warning("%s %s: %s", request.method, request.url.path, error)
    return error_response(
        error.status_code, str(error), error.error_type, error.code, headers=error.headers
    )


async def _runtime_error(request: Request, error: Exception) -> JSONResponse:
    """A llamaship error outside the request's control (e.g. llama.cpp backends not loading)."""
    logger.error("%s %s: %s", request.method, request.url.path, error)
    code = re.sub(r"(?<!^)(?=[A-Z])", "_", type(error).__name__).lower()
    return error_response(500, str(error), "server_error", code)


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    status, code, message, param = describe_validation_errors(error.errors())
    return error_response(status, message, "invalid_request_error", code, param)


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    code = "not_found" if error.status_code == 404 else f"http_{error.status_code}"
    return error_response(
        error.status_code, str(error.detail), "invalid_request_error", code, headers=error.headers
    )


async def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
    logger.error("%s %s failed", request.method, request.url.path, exc_info=error)
    message = f"Internal error ({type(error).__name__}: {error}); the server log has the details."
    return error_response(500, message, "server_error", "internal_error")


def install_error_replies(app: FastAPI) -> None:
    """Route every error through the OpenAI-style JSON shape."""
    app.add_exception_handler(BackendError, _backend_error)
    app.add_exception_handler(LlamashipError, _runtime_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)

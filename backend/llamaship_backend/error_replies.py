"""Every error reply is OpenAI-style JSON: `{"error": {"message", "type", "code", "param"}}`."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from llamaship_backend.errors import BackendError
from llamaship_contract.errors import LlamashipError

logger = logging.getLogger(__name__)


def error_body(
    message: str, error_type: str, code: str, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "code": code, "param": param}}


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
    body = error_body(str(error), error.error_type, error.code)
    return JSONResponse(body, status_code=error.status_code, headers=dict(error.headers))


async def _runtime_error(request: Request, error: Exception) -> JSONResponse:
    """A llamaship error outside the request's control (e.g. llama.cpp backends not loading)."""
    logger.error("%s %s: %s", request.method, request.url.path, error)
    code = re.sub(r"(?<!^)(?=[A-Z])", "_", type(error).__name__).lower()
    return JSONResponse(error_body(str(error), "server_error", code), status_code=500)


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    status, code, message, param = describe_validation_errors(error.errors())
    body = error_body(message, "invalid_request_error", code, param)
    return JSONResponse(body, status_code=status)


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    code = "not_found" if error.status_code == 404 else f"http_{error.status_code}"
    body = error_body(str(error.detail), "invalid_request_error", code)
    return JSONResponse(body, status_code=error.status_code, headers=error.headers)


async def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
    logger.error("%s %s failed", request.method, request.url.path, exc_info=error)
    message = f"Internal error ({type(error).__name__}: {error}); the server log has the details."
    return JSONResponse(error_body(message, "server_error", "internal_error"), status_code=500)


def install_error_replies(app: FastAPI) -> None:
    """Route every error through the OpenAI-style JSON shape."""
    app.add_exception_handler(BackendError, _backend_error)
    app.add_exception_handler(LlamashipError, _runtime_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)

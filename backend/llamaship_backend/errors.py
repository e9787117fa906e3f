"""Errors the API reports to its clients; each knows its HTTP status and OpenAI-style code."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from llamaship_contract.errors import LlamashipError


class BackendError(LlamashipError):
    """An error a request runs into; the reply is `{"error": {"message", "type", "code"}}`."""

    status_code = 400
    error_type = "invalid_request_error"
    code = "invalid_request"
    headers: ClassVar[Mapping[str, str]] = {}  # extra reply headers (e.g. WWW-Authenticate)


class ModelNotConfigured(BackendError):
    """No model file is configured."""

    status_code = 409
    error_type = "model_error"
    code = "model_not_configured"


class ModelFileMissing(BackendError):
    """The configured model file does not exist."""

    status_code = 409
    error_type = "model_error"
    code = "model_file_missing"


class NotAGguf(BackendError):
    """The configured model file is not a GGUF file."""

    status_code = 422
    error_type = "model_error"
    code = "not_a_gguf"


class ModelLoadFailed(BackendError):
    """llama.cpp refused to load the configured model file."""

    status_code = 422
    error_type = "model_error"
    code = "model_load_failed"


class GenerationRefused(BackendError):
    """llama.cpp refused the request's input (e.g. a prompt longer than the context)."""

    status_code = 400
    code = "generation_refused"


class RestartUnavailable(BackendError):
    """The app runs outside `llamaship_backend.server`, so nothing can restart it."""

    status_code = 409
    error_type = "server_error"
    code = "restart_unavailable"

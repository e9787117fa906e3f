"""The root exception of llamaship and the error for a document that breaks the contract."""

from __future__ import annotations

from llamaship_contract.names import ExitStatus


class LlamashipError(Exception):
    """Root of every error llamaship raises on purpose; the message says how to fix it."""

    exit_code: int = ExitStatus.ERROR


class ContractError(LlamashipError):
    """A JSON document is malformed; the message names the document and each bad field."""

    exit_code = ExitStatus.DOCUMENT_INVALID

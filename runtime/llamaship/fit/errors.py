"""Why a fit step gave no plan; the caller falls back to the next step."""

from __future__ import annotations

from llamaship_contract.errors import LlamashipError


class FitError(LlamashipError):
    """No plan could be made from this source (the model's metadata, the tool)."""


class FitToolError(FitError):
    """`llama-fit-params` is missing, failed, hung or printed what we cannot read."""

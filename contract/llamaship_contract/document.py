"""The base of every contract document: strict pydantic models, parsed with field-named errors.

`parse_document` validates bytes, text or decoded JSON and turns pydantic's errors into one
`ContractError` that names the document and every bad field. `dump_document` writes the
canonical bytes (sorted keys, compact, UTF-8) that signatures cover and tests compare.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from llamaship_contract.errors import ContractError

D = TypeVar("D", bound="Document")
_MAX_SHOWN = 60
# A model validator's message part that names its own field: "files[2].path: ...".
_NAMED = re.compile(r"([A-Za-z_][\w.\[\]]*): (.*)", re.DOTALL)


class Document(BaseModel):
    """A contract document: unknown fields are refused, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class StrictDocument(Document):
    """A document that takes JSON types exactly: no "7" for 7, no true for 1."""

    model_config = ConfigDict(strict=True)


def _where(location: tuple[int | str, ...]) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(document)"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."


def _problems(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors(include_url=False):
        where = _where(item["loc"])
        if item["type"] == "value_error":
            # Checks across fields name their fields themselves ("files: lists 'x' twice").
            for part in str(item["ctx"]["error"]).split("; "):
                named = _NAMED.fullmatch(part)
                if named is None:
                    problems.append(f"{where}: {part} (got {_shown(item.get('input'))})")
                elif item["loc"]:
                    problems.append(f"{where}.{named.group(1)}: {named.group(2)}")
                else:
                    problems.append(part)
            continue
        got = "" if item["type"] == "missing" else f" (got {_shown(item.get('input'))})"
        problems.append(f"{where}: {item['msg']}{got}")
    return problems


def parse_document(model: type[D], data: bytes | str | Any, origin: str) -> D:
    """Validate `data` (JSON bytes or text, or already decoded) as `model`; raise ContractError."""
    try:
        if isinstance(data, bytes | str):
            return model.model_validate_json(data)
        return model.model_validate(data)
    except ValidationError as error:
        problems = _problems(error)
        msg = (
            f"{origin} is not a valid {model.__name__} ({len(problems)} problem(s)): "
            f"{'; '.join(problems)}"
        )
        raise ContractError(msg) from None


def dump_document(document: Document) -> bytes:
    """Canonical bytes: sorted keys, compact separators, UTF-8 (what gets signed)."""
    value = document.model_dump(mode="json", by_alias=True)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def dump_document_pretty(document: Document) -> bytes:
    """Indented, sorted JSON with a final newline: for state files people may read."""
    value = document.model_dump(mode="json", by_alias=True)
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()

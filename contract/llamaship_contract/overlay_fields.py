"""The field types of the signed overlay documents (layer manifests, release index).

Each type checks one thing and names it in its error ("must be 64 lowercase hex digits"); the
JSON Schema carries the same pattern.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, Field, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from llamaship_contract.document import StrictDocument, parse_document
from llamaship_contract.errors import ContractError
from llamaship_contract.names import ExitStatus

# The longest file name component file systems take: 255 bytes (ext4, APFS; UTF-8) and
# 255 UTF-16 code units (NTFS). A name never has more UTF-16 units than UTF-8 bytes, so the
# byte limit covers both.
MAX_COMPONENT_BYTES = 255

_FIX = "The overlay cannot be used; rebuild it (nox -s overlay) or report it to its publisher"


class ManifestError(ContractError):
    """A layer manifest or release index is malformed; the overlay is not used."""

    exit_code = ExitStatus.DOCUMENT_INVALID


@dataclass(frozen=True)
class Matches:
    """`Annotated[str, Matches(regex, hint)]`: the whole string matches `regex`; the error says
    "must be <hint>" and the JSON Schema carries the pattern."""

    regex: str
    hint: str

    def _check(self, value: str) -> str:
        if not re.fullmatch(self.regex, value):
            msg = f"must be {self.hint}"
            raise ValueError(msg)
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema.update(pattern=f"^(?:{self.regex})$", description=self.hint)
        return json_schema


def _timestamp(value: str) -> str:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        msg = "must be an ISO 8601 time like '2026-11-25T00:00:00Z'"
        raise ValueError(msg) from None
    return value


def _utc_timestamp(value: str) -> str:
    moment = datetime.fromisoformat(_timestamp(value))
    offset = moment.utcoffset()
    if offset is None or offset.total_seconds() != 0:
        msg = "must be an ISO 8601 UTC time ending in 'Z' or '+00:00'"
        raise ValueError(msg)
    return value


Sha256 = Annotated[str, Matches(r"[0-9a-f]{64}", "64 lowercase hex digits (sha256)")]
Count = Annotated[int, Field(ge=0)]
Text = Annotated[str, Field(min_length=1), Matches(r"\S(.*\S)?", "a non-empty string")]
Tag = Annotated[str, Matches(r"[a-z0-9_]+", "a wheel tag like 'py3' or 'linux_x86_64'")]
CudaVersion = Annotated[str, Matches(r"\d+\.\d+", "MAJOR.MINOR like '13.0'")]
DriverVersion = Annotated[str, Matches(r"\d+(\.\d+){1,2}", "a driver version like '580.65.06'")]
CudaArch = Annotated[str, Matches(r"\d{2,3}[af]?", "a CUDA architecture like '75' or '120'")]
LayerId = Annotated[str, Matches(r"[a-z-]+-[0-9a-f]{16}", "a layer id like 'llama-cuda-<16 hex>'")]
Url = Annotated[str, Matches(r"[^\s\x00]+", "a URL without spaces")]
VersionFloor = Annotated[str, Matches(r"\d+(\.\d+){1,2}", "a version like '2.31' or '3.4.26'")]
VulkanApi = Annotated[str, Matches(r"1\.\d+", "a Vulkan API version MAJOR.MINOR like '1.2'")]
# Open-ended on purpose: a newer build may name features this reader does not know.
ShaderFeature = Annotated[str, Matches(r"[a-z0-9_]+", "a shader feature name like 'coopmat'")]
Timestamp = Annotated[str, AfterValidator(_timestamp)]
UtcTimestamp = Annotated[str, AfterValidator(_utc_timestamp)]


def safe_relative_path(path: str) -> str | None:
    """Why `path` is not a safe relative POSIX path inside a layer, or None if it is."""
    if not path:
        return "is empty"
    if "\\" in path or "\x00" in path:
        return "holds a backslash or NUL"
    if path.startswith("/") or re.match(r"[A-Za-z]:", path):
        return "is absolute"
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "has an empty, '.' or '..' component"
    for part in parts:
        if len(part.encode("utf-8", "surrogatepass")) > MAX_COMPONENT_BYTES:
            return (
                f"has a component {part[:20]!r}... longer than file systems allow "
                f"({MAX_COMPONENT_BYTES} bytes in UTF-8)"
            )
    return None


S = TypeVar("S", bound=StrictDocument)


def parse_signed(model: type[S], data: bytes, origin: str) -> S:
    """Validate `data` as `model`; one `ManifestError` names every bad field and the fix."""
    try:
        return parse_document(model, data, origin)
    except ContractError as error:
        msg = f"{error}. {_FIX}"
        raise ManifestError(msg) from None

"""The signed overlay documents: the layer manifest and the release index (`releases.json`).

Signatures cover the exact canonical bytes (`dump_document`), so the build side writes these
models and the runtime parses the bytes it verified. Field problems are all reported at once,
each under its field; the checks between fields (layer roots, `requires`, links, sizes) run once
every field is valid and name the fields they concern.

A `files` entry may be a symbolic link inside the layer (`"link": "<relative target>"`): its
`size` and `sha256` are those of the target, which must be a regular file listed in the same
manifest. `unpacked_size` is the sum of the regular files' sizes.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from llamaship_contract.document import StrictDocument, dump_document, parse_document
from llamaship_contract.errors import ContractError
from llamaship_contract.names import ARCHIVE_SUFFIX, ExitStatus

FORMAT = 1
LayerName = Literal["cuda-runtime", "llama-cuda"]
LAYER_NAMES: tuple[LayerName, ...] = ("cuda-runtime", "llama-cuda")
# The top-level directories each layer may hold.
LAYER_ROOTS: Mapping[str, tuple[str, ...]] = {
    "cuda-runtime": ("lib", "bin", "licenses"),
    "llama-cuda": ("llama_cpp",),
}
# The layer a layer must require, or None when it stands alone.
REQUIRED_LAYER: Mapping[str, str | None] = {"cuda-runtime": None, "llama-cuda": "cuda-runtime"}
OsName = Literal["linux", "windows"]
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


class ArchiveRef(StrictDocument):
    """The compressed layer archive a manifest describes."""

    name: str
    size: int = Field(ge=1)
    sha256: Sha256

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        if safe_relative_path(name) or "/" in name or not name.endswith(ARCHIVE_SUFFIX):
            msg = f"must be a plain file name ending in {ARCHIVE_SUFFIX}"
            raise ValueError(msg)
        return name


class FileEntry(StrictDocument):
    """One file of an unpacked layer; `link` is set for a symlink (relative target)."""

    path: str
    size: Count
    sha256: Sha256
    link: str | None = Field(default=None, min_length=1, exclude_if=lambda link: link is None)

    @field_validator("path")
    @classmethod
    def _safe(cls, path: str) -> str:
        unsafe = safe_relative_path(path)
        if unsafe:
            msg = f"{path[:80]!r} {unsafe}: it must stay inside the layer"
            raise ValueError(msg)
        return path


class RequiredLayer(StrictDocument):
    """The manifest's `requires`: the exact other layer this one runs with."""

    layer: LayerName
    id: LayerId
    sha256: Sha256

    @model_validator(mode="after")
    def _consistent(self) -> RequiredLayer:
        problems = []
        if not self.id.startswith(f"{self.layer}-"):
            problems.append(f"id: must start with '{self.layer}-'")
        if not self.id.endswith(f"-{self.sha256[:16]}"):
            problems.append("id: must end with the first 16 hex digits of sha256")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class OverlayRequirements(StrictDocument):
    """What an overlay needs from the machine: its llama-cuda manifest, `min_driver` for this OS.

    The compatibility rule (`llamaship.compat`) judges a detection report against it; the
    store's pointer files keep it beside the layers.
    """

    overlay_version: Text
    serial: Count
    cuda_version: CudaVersion
    min_driver: DriverVersion
    cuda_archs: tuple[CudaArch, ...]
    ptx_archs: tuple[CudaArch, ...]
    min_vram_mb: Count


def _file_problems(
    files: tuple[FileEntry, ...], unpacked_size: int, roots: tuple[str, ...]
) -> list[str]:
    problems: list[str] = []
    by_path: dict[str, FileEntry] = {}
    for position, entry in enumerate(files):
        if entry.path.split("/")[0] not in roots:
            problems.append(
                f"files[{position}].path: {entry.path!r} is outside the layer's "
                f"top-level directories ({', '.join(roots)})"
            )
        if entry.path in by_path:
            problems.append(f"files: lists {entry.path!r} twice")
        by_path[entry.path] = entry
    for entry in files:
        parents = entry.path.split("/")[:-1]
        for depth in range(1, len(parents) + 1):
            if "/".join(parents[:depth]) in by_path:
                problems.append(
                    f"files: {entry.path!r} lies under {'/'.join(parents[:depth])!r}"
                    ", which is listed as a file"
                )
                break
    for entry in files:
        if entry.link is None:
            continue
        target_path = posixpath.normpath(posixpath.join(posixpath.dirname(entry.path), entry.link))
        target = by_path.get(target_path)
        if entry.link.startswith("/") or safe_relative_path(target_path) or target is None:
            problems.append(
                f"files: link {entry.path!r} -> {entry.link!r} must point to a "
                "regular file listed in the same layer"
            )
        elif target.link is not None:
            problems.append(f"files: link {entry.path!r} points to another link")
        elif (target.size, target.sha256) != (entry.size, entry.sha256):
            problems.append(f"files: link {entry.path!r} must repeat its target's size and sha256")
    if not files:
        problems.append("files: must list at least one file")
    regular_bytes = sum(entry.size for entry in files if entry.link is None)
    if files and regular_bytes != unpacked_size:
        problems.append(
            f"unpacked_size: is {unpacked_size} but the regular files add up to {regular_bytes}"
        )
    return problems


class LayerManifest(StrictDocument):
    """A signed description of one overlay layer (`cuda-runtime` or `llama-cuda`)."""

    format: int
    layer: LayerName
    overlay_version: Text
    serial: Count
    requires: RequiredLayer | None
    llama_cpp_version: Text
    python_tag: Tag
    platform: Tag
    cuda_version: CudaVersion
    min_driver: dict[OsName, DriverVersion] = Field(min_length=1)
    cuda_archs: tuple[CudaArch, ...]
    ptx_archs: tuple[CudaArch, ...]
    min_vram_mb: Count
    archive: ArchiveRef
    unpacked_size: Count
    files: tuple[FileEntry, ...]
    created: Timestamp

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: int) -> int:
        if value != FORMAT:
            msg = (
                f"is {value}, this llamaship reads format {FORMAT} only (update the "
                "application to use newer overlays)"
            )
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> LayerManifest:
        problems = _file_problems(self.files, self.unpacked_size, LAYER_ROOTS[self.layer])
        wanted = REQUIRED_LAYER[self.layer]
        if wanted is None and self.requires is not None:
            problems.append(f"requires: must be null for a {self.layer} layer")
        elif wanted is not None and self.requires is None:
            problems.append(
                f"requires: must name the {wanted} layer a {self.layer} layer runs with"
            )
        elif self.requires is not None and self.requires.layer != wanted:
            problems.append(f"requires.layer: must be {wanted} for a {self.layer} layer")
        if not (self.cuda_archs or self.ptx_archs):
            problems.append("cuda_archs: and ptx_archs are both empty: the layer runs on no GPU")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def id(self) -> str:
        """The store's name for the layer: its kind plus the start of its archive hash."""
        return f"{self.layer}-{self.archive.sha256[:16]}"


class LayerRef(StrictDocument):
    """One layer of a release in the index: where its manifest and archive are."""

    layer: LayerName
    id: LayerId
    manifest: Url
    manifest_sha256: Sha256
    archive: Url

    @model_validator(mode="after")
    def _id_names_layer(self) -> LayerRef:
        if not self.id.startswith(f"{self.layer}-"):
            msg = f"id: must start with '{self.layer}-'"
            raise ValueError(msg)
        return self


class ReleaseEntry(StrictDocument):
    """One overlay release in the index: its identity, what it needs, and its layers.

    The requirements repeat the llama-cuda manifest's, so a release can be chosen from the
    index alone; the installer checks that the signed manifests say the same.
    """

    overlay_version: Text
    serial: Count
    platform: Tag
    python_tag: Tag
    llama_cpp_version: Text
    cuda_version: CudaVersion
    min_driver: dict[OsName, DriverVersion] = Field(min_length=1)
    cuda_archs: tuple[CudaArch, ...]
    ptx_archs: tuple[CudaArch, ...]
    min_vram_mb: Count
    layers: tuple[LayerRef, ...]

    @model_validator(mode="after")
    def _each_layer_once(self) -> ReleaseEntry:
        names = sorted(ref.layer for ref in self.layers)
        if names != sorted(LAYER_NAMES):
            msg = (
                f"layers: must list each of {', '.join(LAYER_NAMES)} once "
                f"(got {', '.join(names) or 'none'})"
            )
            raise ValueError(msg)
        return self

    def layer(self, name: str) -> LayerRef:
        """The entry's layer called `name` (every valid entry has each layer once)."""
        for ref in self.layers:
            if ref.layer == name:
                return ref
        msg = f"release {self.overlay_version} has no {name} layer"
        raise ManifestError(msg)


class ReleaseIndex(StrictDocument):
    """The signed list of published overlays (`releases.json`).

    `expires` (ISO 8601 UTC) bounds how long a served copy is believed: an index past it is
    refused (a frozen mirror cannot hide newer releases forever); the release job re-signs it.
    """

    format: int
    serial: Count
    created: Timestamp
    expires: UtcTimestamp
    overlays: tuple[ReleaseEntry, ...]

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: int) -> int:
        return LayerManifest._known_format(value)

    @model_validator(mode="after")
    def _serials(self) -> ReleaseIndex:
        problems = [
            f"overlays[{position}].serial: {entry.serial} is newer than the index "
            f"serial {self.serial}"
            for position, entry in enumerate(self.overlays)
            if entry.serial > self.serial
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def expires_at(self) -> datetime:
        """`expires` as an aware UTC datetime."""
        return datetime.fromisoformat(self.expires).astimezone(UTC)


S = TypeVar("S", bound=StrictDocument)


def _parse(model: type[S], data: bytes, origin: str) -> S:
    try:
        return parse_document(model, data, origin)
    except ContractError as error:
        msg = f"{error}. {_FIX}"
        raise ManifestError(msg) from None


def parse_manifest(data: bytes, *, origin: str = "overlay manifest") -> LayerManifest:
    """Validate and type a layer manifest; raises one `ManifestError` naming every bad field."""
    return _parse(LayerManifest, data, origin)


def parse_index(data: bytes, *, origin: str = "release index") -> ReleaseIndex:
    """Validate and type a release index; raises one `ManifestError` naming every bad field."""
    return _parse(ReleaseIndex, data, origin)


def dump_manifest(manifest: LayerManifest) -> bytes:
    """Canonical manifest bytes (sorted keys, compact, UTF-8): what gets signed."""
    return dump_document(manifest)


def dump_index(index: ReleaseIndex) -> bytes:
    """Canonical release index bytes (sorted keys, compact, UTF-8): what gets signed."""
    return dump_document(index)


def requirements_for(source: LayerManifest | ReleaseEntry, os_name: str) -> OverlayRequirements:
    """What the release of `source` needs from a machine running `os_name` ('linux', 'windows').

    Raises ManifestError when the overlay names no driver floor for that OS (not built for it).
    """
    min_driver = next(
        (version for name, version in source.min_driver.items() if name == os_name), None
    )
    if min_driver is None:
        known = ", ".join(sorted(source.min_driver)) or "none"
        msg = (
            f"overlay {source.overlay_version} names no minimum driver for {os_name} "
            f"(only for: {known}): it was not built for this OS"
        )
        raise ManifestError(msg)
    return OverlayRequirements(
        overlay_version=source.overlay_version,
        serial=source.serial,
        cuda_version=source.cuda_version,
        min_driver=min_driver,
        cuda_archs=source.cuda_archs,
        ptx_archs=source.ptx_archs,
        min_vram_mb=source.min_vram_mb,
    )


def layer_id(manifest: LayerManifest) -> str:
    """The store's name for a layer: its kind plus the start of its archive hash."""
    return manifest.id

"""The signed release index, in two documents with one job each (TUF's timestamp and targets).

- `releases.json` (`ReleaseIndex`): the live entry point at the stable release URL. It says
  how fresh the index is (`serial`, `expires`) and pins the release list by size and sha256.
  The release key or the index key signs it; the index key can do nothing else, so the
  scheduled re-sign holds a key that cannot add a release or change a layer.
- `overlays.json` (`ReleaseList`): the releases, signed by the release key only.

The format can grow. Every entry names its `kind` and the oldest `reader` that understands it:
a bundle skips entries of kinds it does not know or of a newer reader (and says so), ignores
optional fields it does not know, and still installs what it understands. A field that changes
what a machine needs bumps `reader`, so no older bundle installs what it cannot judge. The
fields a reader knows stay strict: a malformed hash or serial is never used.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import (
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from llamaship_contract.document import StrictDocument, dump_document
from llamaship_contract.overlay import (
    KIND_LAYERS,
    KindFacts,
    LayerKind,
    LayerName,
    without_other_kinds,
)
from llamaship_contract.overlay_fields import (
    Count,
    LayerId,
    ManifestError,
    Sha256,
    Tag,
    Text,
    Timestamp,
    Url,
    UtcTimestamp,
    parse_signed,
    safe_relative_path,
)

FORMAT = 2
# The newest entry `reader` this code understands (an entry's `reader` is the oldest it needs).
READER = 1
OVERLAYS_NAME = "overlays.json"


class _Growing(StrictDocument):
    """A signed document that a newer publisher may extend: unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")


def _known_format(value: int, what: str) -> int:
    if value != FORMAT:
        msg = (
            f"is {value}, this llamaship reads {what} format {FORMAT} only (update the "
            "application to use newer overlays)"
        )
        raise ValueError(msg)
    return value


class LayerRef(_Growing):
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


class ReleaseEntry(KindFacts):
    """One overlay release: its kind, identity, what it needs from a machine, and its layers.

    The requirements repeat the layer manifests', so a release is chosen, and a machine that
    cannot load it refused, before anything is downloaded; the installer checks that the
    signed manifests say the same.
    """

    # A newer publisher may add fields: this reader ignores them (see the module docstring).
    model_config = ConfigDict(extra="ignore")

    kind: LayerKind
    reader: int = Field(default=1, ge=1)
    platform: Tag
    python_tag: Tag
    llama_cpp_version: Text
    layers: tuple[LayerRef, ...]

    @model_serializer(mode="wrap")
    def _kind_fields_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return without_other_kinds(self.kind, handler(self))

    @model_validator(mode="after")
    def _consistent(self) -> ReleaseEntry:
        problems = self.kind_problems(self.kind)
        names = sorted(ref.layer for ref in self.layers)
        wanted = KIND_LAYERS[self.kind]
        if names != sorted(wanted):
            problems.append(
                f"layers: a {self.kind} release lists each of {', '.join(wanted)} once "
                f"(got {', '.join(names) or 'none'})"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def layer(self, name: str) -> LayerRef:
        """The entry's layer called `name` (every valid entry has each of its layers once)."""
        for ref in self.layers:
            if ref.layer == name:
                return ref
        msg = f"release {self.overlay_version} has no {name} layer"
        raise ManifestError(msg)


class ReleaseList(_Growing):
    """The signed list of published overlays (`overlays.json`), release key only.

    `overlays` holds each entry as published; `known_entries` types the ones this reader
    understands and says why it skipped the others.
    """

    format: int
    serial: Count
    created: Timestamp
    overlays: tuple[dict[str, Any], ...]

    @field_validator("format")
    @classmethod
    def _format(cls, value: int) -> int:
        return _known_format(value, "release list")


class PinnedList(_Growing):
    """The release list a `releases.json` vouches for: its name beside it, size and hash."""

    name: str
    size: int = Field(ge=1)
    sha256: Sha256
    serial: Count

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        if safe_relative_path(name) or "/" in name or not name.endswith(".json"):
            msg = "must be a plain file name ending in .json, beside releases.json"
            raise ValueError(msg)
        return name


class ReleaseIndex(_Growing):
    """The live entry point (`releases.json`): freshness, and the release list it pins.

    `expires` (ISO 8601 UTC) bounds how long a served copy is believed: an index past it is
    refused (a frozen mirror cannot hide newer releases forever); the index key re-signs it.
    """

    format: int
    serial: Count
    created: Timestamp
    expires: UtcTimestamp
    overlays: PinnedList

    @field_validator("format")
    @classmethod
    def _format(cls, value: int) -> int:
        return _known_format(value, "release index")

    @property
    def expires_at(self) -> datetime:
        """`expires` as an aware UTC datetime."""
        return datetime.fromisoformat(self.expires).astimezone(UTC)


def known_entries(
    releases: ReleaseList, origin: str
) -> tuple[tuple[ReleaseEntry, ...], tuple[str, ...]]:
    """The entries this reader understands, and one line per entry it skipped and why.

    An entry of an unknown kind or a newer reader is skipped; so is one that is malformed or
    claims a serial newer than its list (never used, always reported).
    """
    entries: list[ReleaseEntry] = []
    skipped: list[str] = []
    for position, raw in enumerate(releases.overlays):
        kind, reader = raw.get("kind"), raw.get("reader", 1)
        where = f"{origin} overlays[{position}]"
        if kind not in KIND_LAYERS or not isinstance(reader, int) or reader > READER:
            skipped.append(
                f"{where}: a {kind!r} release for reader {reader!r}, which this llamaship "
                f"(reader {READER}) does not know: skipped (a newer llamaship can use it)"
            )
            continue
        try:
            entry = parse_signed(ReleaseEntry, json.dumps(raw).encode(), where)
        except ManifestError as error:
            skipped.append(f"{error}: skipped")
            continue
        if entry.serial > releases.serial:
            skipped.append(
                f"{where}: serial {entry.serial} is newer than the list's {releases.serial}: "
                "skipped"
            )
            continue
        entries.append(entry)
    return tuple(entries), tuple(skipped)


def parse_index(data: bytes, *, origin: str = "release index") -> ReleaseIndex:
    """Validate and type `releases.json`; raises one `ManifestError` naming every bad field."""
    return parse_signed(ReleaseIndex, data, origin)


def parse_release_list(data: bytes, *, origin: str = "release list") -> ReleaseList:
    """Validate and type `overlays.json`; raises one `ManifestError` naming every bad field."""
    return parse_signed(ReleaseList, data, origin)


def dump_index(index: ReleaseIndex | ReleaseList) -> bytes:
    """Canonical bytes (sorted keys, compact, UTF-8): what gets signed."""
    return dump_document(index)

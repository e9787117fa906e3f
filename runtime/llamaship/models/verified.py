"""What a model pull verified against: `models/.verified/<file>.json` beside the model.

Written before the download starts (so a resumed pull compares against the same hash) and
kept with the installed file: an installed copy is checked against it without asking the hub
again. A missing, unreadable or malformed record is no record.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from llamaship.io.fs import atomic_write_json

VERIFIED_DIR = ".verified"
_MAX_SIZE = 4096
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Verified:
    """The sha256 and size a pull of `url` checks the file against, and who vouched for them."""

    url: str
    sha256: str
    size: int
    vouched_by: str


def record_path(models: Path, file_name: str) -> Path:
    return models / VERIFIED_DIR / f"{file_name}.json"


def save(models: Path, file_name: str, verified: Verified) -> None:
    """Record `verified` for `file_name` (atomically)."""
    atomic_write_json(record_path(models, file_name), asdict(verified))


def load(models: Path, file_name: str) -> Verified | None:
    """The record of `file_name`, if there is a well-formed one."""
    try:
        with record_path(models, file_name).open("rb") as handle:
            record = json.loads(handle.read(_MAX_SIZE))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    url, sha256, size, vouched_by = (
        record.get(key) for key in ("url", "sha256", "size", "vouched_by")
    )
    if (
        not isinstance(url, str)
        or not isinstance(sha256, str)
        or not _SHA256.fullmatch(sha256)
        or not isinstance(size, int)
        or size <= 0
        or not isinstance(vouched_by, str)
    ):
        return None
    return Verified(url, sha256, size, vouched_by)


def forget(models: Path, file_name: str) -> None:
    """Remove the record of `file_name` (and the records' directory once empty)."""
    record = record_path(models, file_name)
    record.unlink(missing_ok=True)
    try:
        record.parent.rmdir()
    except OSError:
        pass  # other records remain, or it is gone already

"""The launch's look at the release index for a GPU overlay: at most once a day, with an off
switch, and saying so when no index was looked at.

`check_release` reads the index (through `lookup`, the bootstrap's bounded `find_overlay`) only
when the last answer for the same index, bundle and GPUs is a day old or more; that answer (the
offered overlay's requirements, why it offers none for this machine, or why the index could not
be read) is kept in `LLAMASHIP_HOME/state/release-check.json`. `LLAMASHIP_RELEASE_CHECK=false`
turns the check off. `ReleaseCheck.unchecked` says why no index was read, so that the decision
never claims that no release offers an overlay when none was checked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Generic, TypeVar

from llamaship.config import Settings
from llamaship.io.fs import atomic_write_json
from llamaship_contract.document import parse_document
from llamaship_contract.errors import ContractError, LlamashipError
from llamaship_contract.overlay import LayerKind, OverlayRequirements, VulkanRequirements

_log = logging.getLogger(__name__)

CHECK_FILE = "release-check.json"
# Each kind's answer is kept apart: a machine may be offered a CUDA and a Vulkan overlay.
CHECK_FILES: dict[LayerKind, str] = {"cuda": CHECK_FILE, "vulkan": "release-check-vulkan.json"}
CHECK_INTERVAL_S = 24 * 3600
_MAX_SIZE = 64 * 1024

R = TypeVar("R", OverlayRequirements, VulkanRequirements)


@dataclass(frozen=True)
class Refusal:
    """The index was read and offers this machine no overlay: why (the one rule's problems)."""

    reason: str


Lookup = Callable[[str], R | Refusal]
"""Reads the index at a URL: the overlay it offers this machine, or why it offers none;
raises (`LlamashipError`, `OSError`) when the index cannot be read or trusted."""


@dataclass(frozen=True)
class ReleaseCheck(Generic[R]):
    """What the release index offers, or why it was not looked at."""

    available: R | None
    unchecked: str | None
    """Why no release index was read (None: one was, now or within the last day)."""
    note: str | None = None
    """An event for the launch (a failed read)."""
    refused: str | None = None
    """Why the index, read now or within the last day, offers this machine no overlay."""


def check_file(state_dir: Path, kind: LayerKind = "cuda") -> Path:
    return state_dir / CHECK_FILES[kind]


def _when(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M UTC")


def check_release(
    settings: Settings,
    state_dir: Path,
    fingerprint: str,
    lookup: Lookup[R],
    *,
    kind: LayerKind = "cuda",
    model: type[R] = OverlayRequirements,  # type: ignore[assignment]  # R's default
    now: Callable[[], float] = time.time,
) -> ReleaseCheck[R]:
    """The `kind` overlay the release index offers (`lookup`, answering `model`s), from the
    cache when the last check of the same index for the same `fingerprint` (bundle, GPUs) is
    less than a day old."""
    url = settings.release_url
    if url is None:
        return ReleaseCheck(
            None,
            "no release index was checked: this build names none (set LLAMASHIP_RELEASE_URL "
            "to the releases.json of the GPU overlays)",
        )
    if not settings.release_check:
        return ReleaseCheck(None, "no release index was checked: LLAMASHIP_RELEASE_CHECK is off")
    key = hashlib.sha256(f"{url}\n{fingerprint}".encode()).hexdigest()
    path = check_file(state_dir, kind)
    moment = now()
    cached = _cached(path, key, moment, model)
    if cached is not None:
        return cached
    try:
        found = lookup(url)
    except (LlamashipError, OSError) as error:
        _save(path, key, moment, None, error=str(error))
        return ReleaseCheck(
            None,
            f"the release index could not be checked ({error}); the next launch after "
            f"{_when(moment + CHECK_INTERVAL_S)} tries again",
            f"could not check for a {'CUDA' if kind == 'cuda' else 'Vulkan'} overlay: {error}",
        )
    if isinstance(found, Refusal):
        _save(path, key, moment, None, refused=found.reason)
        return ReleaseCheck(None, None, refused=found.reason)
    _save(path, key, moment, found)
    return ReleaseCheck(found, None)


def _save(
    path: Path,
    key: str,
    moment: float,
    available: OverlayRequirements | VulkanRequirements | None,
    *,
    error: str | None = None,
    refused: str | None = None,
) -> None:
    record = {
        "key": key,
        "checked_at": moment,
        # As JSON text: strict documents take tuples back only from JSON.
        "available": None if available is None else available.model_dump_json(),
        "error": error,
        "refused": refused,
    }
    try:
        atomic_write_json(path, record)
    except OSError as problem:  # a read-only home: the next launch checks again
        _log.warning("cannot keep the release check in %s: %s", path, problem)


def _cached(path: Path, key: str, moment: float, model: type[R]) -> ReleaseCheck[R] | None:
    """The stored answer when it is for `key` and less than a day old (else None)."""
    try:
        with path.open("rb") as handle:
            record = json.loads(handle.read(_MAX_SIZE))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("key") != key:
        return None
    checked_at = record.get("checked_at")
    if not isinstance(checked_at, int | float) or not 0 <= moment - checked_at < CHECK_INTERVAL_S:
        return None
    error = record.get("error")
    if isinstance(error, str):
        return ReleaseCheck(
            None,
            f"the release index could not be checked at {_when(checked_at)} ({error}); the "
            f"next launch after {_when(checked_at + CHECK_INTERVAL_S)} tries again",
        )
    offered = record.get("available")
    if offered is None:
        refused = record.get("refused")
        return ReleaseCheck(None, None, refused=refused if isinstance(refused, str) else None)
    if not isinstance(offered, str):
        return None
    try:
        available = parse_document(model, offered, str(path))
    except ContractError:
        return None
    return ReleaseCheck(available, None)

"""Boot sentinel: a launch with an overlay that never became healthy quarantines it next time.

Written before the overlay is activated, removed once the server answers. A sentinel left by a
process that is still running belongs to a concurrent launch, not to a crash.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from llamaship.overlay._fs import atomic_write_json

_log = logging.getLogger(__name__)
SENTINEL_NAME = "boot-sentinel.json"


@dataclass(frozen=True)
class Sentinel:
    """A launch that activated `overlay_version` and has not reported healthy yet."""

    overlay_version: str
    pid: int


def _path(state_dir: Path) -> Path:
    return state_dir / SENTINEL_NAME


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def crashed_launch(state_dir: Path) -> Sentinel | None:
    """The sentinel of an earlier launch that died before healthy, if any (then removed)."""
    path = _path(state_dir)
    try:
        data = json.loads(path.read_text())
        sentinel = Sentinel(str(data["overlay_version"]), int(data["pid"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        _log.warning("ignoring an unreadable boot sentinel %s: %s", path, error)
        path.unlink(missing_ok=True)
        return None
    if _alive(sentinel.pid):
        return None
    path.unlink(missing_ok=True)
    return sentinel


def mark_booting(state_dir: Path, overlay_version: str) -> None:
    atomic_write_json(_path(state_dir), {"overlay_version": overlay_version, "pid": os.getpid()})


def clear(state_dir: Path) -> None:
    _path(state_dir).unlink(missing_ok=True)

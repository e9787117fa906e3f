"""Boot counting: an overlay is quarantined after `BOOT_TRIES` unhealthy launches in a row.

systemd-boot's boot assessment is the model. Each overlay version has a `BootCount` file
(`state/boot-count/<version>.json`) holding the tries it has left and the launches running it.
A launch records itself and its phase there; a later launch (`assess`, under the launch lock)
looks at every recorded launch whose process is gone:
- it died while booting (the overlay's backend module being loaded) or while loading its first
  model and generating its first token: that was a crash or a hang of the overlay's code, one
  try is used up (a hung launch is killed by someone, which ends the same way);
- it was only listening, was healthy, or ended by a signal or normally: neither proves nor
  condemns the overlay.
A healthy launch gives the overlay all its tries back. Processes are identified by pid plus
creation time (psutil), so a reused pid is not mistaken for a running launch; nothing here
sends a signal (`os.kill(pid, 0)` terminates the process on Windows).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import JsonValue

from llamaship.io.fs import atomic_write_bytes
from llamaship.paths import DataDirs
from llamaship_contract.document import dump_document_pretty, parse_document
from llamaship_contract.errors import ContractError
from llamaship_contract.launch import COUNTED_PHASES, BootCount, LaunchPhase, LaunchProcess

_log = logging.getLogger(__name__)
BOOT_TRIES = 2
COUNT_DIR = "boot-count"
COUNT_LOCK_TIMEOUT_S = 10.0
# psutil reports creation times rounded to the clock tick; equal within this is the same process.
_CREATE_TIME_TOLERANCE_S = 0.05
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")


@dataclass(frozen=True)
class ProcessIdentity:
    """A process as pid plus creation time: a later process reusing the pid differs."""

    pid: int
    create_time: float


def current_process() -> ProcessIdentity:
    """This process."""
    import psutil

    return ProcessIdentity(os.getpid(), psutil.Process().create_time())


def is_running(process: ProcessIdentity) -> bool:
    """Whether `process` still runs (a zombie does not); never signals it (Windows-safe)."""
    import psutil

    try:
        candidate = psutil.Process(process.pid)
        if abs(candidate.create_time() - process.create_time) > _CREATE_TIME_TOLERANCE_S:
            return False  # the pid now belongs to another process
        return bool(candidate.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # it exists, under another account


def count_file(dirs: DataDirs, overlay_version: str) -> Path:
    """The boot-count file of `overlay_version` (its name is hashed if unsafe as a file name)."""
    name = (
        overlay_version
        if _SAFE_NAME.fullmatch(overlay_version)
        else (hashlib.sha256(overlay_version.encode()).hexdigest())
    )
    return dirs.state / COUNT_DIR / f"{name}.json"


def _fresh(overlay_version: str) -> BootCount:
    return BootCount(overlay_version=overlay_version, tries=BOOT_TRIES, tries_left=BOOT_TRIES)


def read_count(dirs: DataDirs, overlay_version: str) -> BootCount:
    """The overlay's boot count; a missing, unreadable or foreign file reads as untouched."""
    path = count_file(dirs, overlay_version)
    try:
        count = parse_document(BootCount, path.read_bytes(), str(path))
    except FileNotFoundError:
        return _fresh(overlay_version)
    except (OSError, ContractError) as error:
        _log.warning("ignoring an unreadable boot count: %s", error)
        return _fresh(overlay_version)
    return count if count.overlay_version == overlay_version else _fresh(overlay_version)


def _update(
    dirs: DataDirs, overlay_version: str, change: Callable[[BootCount], BootCount]
) -> BootCount:
    """Read-modify-write of one boot-count file under its own short lock; the new count."""
    from filelock import FileLock

    path = count_file(dirs, overlay_version)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock", timeout=COUNT_LOCK_TIMEOUT_S):
        before = read_count(dirs, overlay_version)
        after = change(before)
        if after != before:
            atomic_write_bytes(path, dump_document_pretty(after))
    return after


def _same(launch: LaunchProcess, other: LaunchProcess) -> bool:
    return (launch.pid, launch.create_time) == (other.pid, other.create_time)


@dataclass(frozen=True)
class Assessment:
    """What `assess` found: the count after it, and the failed launches it just counted."""

    count: BootCount
    counted: tuple[LaunchProcess, ...]

    @property
    def quarantine(self) -> bool:
        return self.count.tries_left == 0


def assess(
    dirs: DataDirs,
    overlay_version: str,
    me: ProcessIdentity,
    running: Callable[[ProcessIdentity], bool] = is_running,
) -> Assessment:
    """Count the launches of `overlay_version` that died while its code ran (call under the
    launch lock). A record with this process's own identity is from before an exec-restart:
    that launch replaced itself, it did not crash."""
    counted: list[LaunchProcess] = []

    def change(count: BootCount) -> BootCount:
        alive: list[LaunchProcess] = []
        for launch in sorted(count.running, key=lambda launch: launch.started):
            identity = ProcessIdentity(launch.pid, launch.create_time)
            if identity != me and running(identity):
                alive.append(launch)
            elif identity != me and launch.phase in COUNTED_PHASES:
                counted.append(launch)
        return count.model_copy(
            update={
                "running": tuple(alive),
                "tries_left": max(count.tries_left - len(counted), 0),
                "last_failure": counted[-1] if counted else count.last_failure,
            }
        )

    return Assessment(_update(dirs, overlay_version, change), tuple(counted))


def forget(dirs: DataDirs, overlay_version: str) -> None:
    """Drop the overlay's boot count (it was quarantined: a reinstall starts afresh)."""
    count_file(dirs, overlay_version).unlink(missing_ok=True)


def record_phase(dirs: DataDirs, overlay_version: str, launch: LaunchProcess) -> BootCount:
    """Record this launch (`launch`) in its phase; a healthy one restores every try."""

    def change(count: BootCount) -> BootCount:
        update: dict[str, object] = {
            "running": (*(entry for entry in count.running if not _same(entry, launch)), launch)
        }
        if launch.phase == "healthy":
            update |= {"tries_left": count.tries, "last_failure": None}
        return count.model_copy(update=update)

    return _update(dirs, overlay_version, change)


def record_end(dirs: DataDirs, overlay_version: str, launch: LaunchProcess) -> BootCount:
    """This launch ended without a crash: it no longer counts either way."""
    return _update(
        dirs,
        overlay_version,
        lambda count: count.model_copy(
            update={"running": tuple(entry for entry in count.running if not _same(entry, launch))}
        ),
    )


def new_launch(
    me: ProcessIdentity,
    phase: LaunchPhase = "booting",
    *,
    model: Path | None = None,
    plan: Mapping[str, JsonValue] | None = None,
) -> LaunchProcess:
    """A `LaunchProcess` for this process starting now."""
    return LaunchProcess(
        pid=me.pid,
        create_time=me.create_time,
        started=datetime.now(UTC),
        phase=phase,
        model=str(model) if model is not None else None,
        plan=dict(plan) if plan is not None else None,
    )

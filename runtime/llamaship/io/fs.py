"""File system primitives of the overlay store: durable atomic writes and free-space checks."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llamaship_contract.errors import LlamashipError
from llamaship_contract.names import ExitStatus

# Write errors that mean "no room": disk full, quota exceeded, file size limit (RLIMIT_FSIZE).
STORAGE_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)})
# Temporary files of `atomic_write_json` carry this suffix so leftovers can be recognised.
TEMP_SUFFIX = ".tmp"


class DiskSpaceError(LlamashipError):
    """Not enough free disk space for a download or an extraction."""

    exit_code = ExitStatus.DISK_FULL


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (creations, renames) durable; a no-op where unsupported."""
    if os.name == "nt":  # Windows cannot open a directory for fsync; NTFS journals renames.
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: temp file in the same dir, fsync file and dir, os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_json(path: Path, value: Any) -> None:
    """Write `value` as JSON with `atomic_write_bytes`."""
    atomic_write_bytes(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def free_bytes(directory: Path) -> int:
    """The bytes free for this user on `directory`'s file system."""
    return shutil.disk_usage(directory).free


def ensure_free_space(
    directory: Path, needed: int, what: str, free_space: Callable[[Path], int] = free_bytes
) -> None:
    """Raise `DiskSpaceError` unless `directory`'s file system has `needed` bytes free
    (`free_space` measures it)."""
    free = free_space(directory)
    if free < needed:
        msg = (
            f"not enough disk space for {what}: it needs {_mib(needed)} in {directory}, "
            f"only {_mib(free)} are free; free some space and try again"
        )
        raise DiskSpaceError(msg)


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"

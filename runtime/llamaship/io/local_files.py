"""Local sources: paths and file:// URLs, read or verified in place, never copied.

A FIFO, device or directory where a file is expected is refused at once, without opening it
(and a FIFO swapped in between the check and the open cannot hang the open).
"""

from __future__ import annotations

import os
import stat
import urllib.parse
import urllib.request
from pathlib import Path

from llamaship.io.transfer import DownloadError, IntegrityError, ProgressFn
from llamaship_contract.hashing import sha256_of
from llamaship_contract.textsafe import printable

# Open flags that make opening a FIFO return at once (POSIX) and keep bytes as they are (Windows).
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_BINARY", 0)
)


def local_path(location: str) -> Path | None:
    """The file a path or file:// URL names, or None for an http(s) URL."""
    parts = urllib.parse.urlsplit(location)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return None
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            msg = (
                f"{printable(location)}: file:// URLs on another host are not supported; "
                "copy the files locally"
            )
            raise DownloadError(msg)
        return Path(urllib.request.url2pathname(parts.path))
    if scheme == "" or len(scheme) == 1:  # a plain path (one letter: a Windows drive)
        return Path(location)
    msg = (
        f"{printable(location)}: unsupported URL scheme '{printable(scheme, 20)}'; "
        "use https://, http://, file:// or a path"
    )
    raise DownloadError(msg)


def resolve_location(base: str, reference: str) -> str:
    """`reference` (absolute, or relative to the index at `base`) as a location to fetch."""
    if urllib.parse.urlsplit(reference).scheme.lower() in ("http", "https", "file"):
        return reference
    base_path = local_path(base)
    if base_path is None:
        return urllib.parse.urljoin(base, reference)
    if urllib.parse.urlsplit(base).scheme.lower() == "file":
        return urllib.parse.urljoin(base, reference)
    return str(base_path.parent / urllib.parse.unquote(reference))


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _not_a_file(path: Path, mode: int, what: str) -> DownloadError:
    return DownloadError(
        f"the {what} at {printable(str(path))} is {_kind(mode)}, not a regular "
        "file: refused; point to the release's files"
    )


def _regular_size(path: Path, what: str) -> int:
    """The size of the regular file at `path`; refuses anything else without opening it."""
    try:
        status = path.stat()
    except OSError as error:
        msg = f"cannot read the {what} at {printable(str(path))}: {error.strerror}"
        raise DownloadError(msg) from None
    if not stat.S_ISREG(status.st_mode):
        raise _not_a_file(path, status.st_mode, what)
    return status.st_size


def read_local(path: Path, limit: int, what: str) -> bytes:
    """Up to `limit` bytes of the regular file at `path`.

    Checked with stat before opening, opened non-blocking (a FIFO swapped in meanwhile cannot
    hang the open) and checked again on the open descriptor.
    """
    _regular_size(path, what)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as error:
        msg = f"cannot read the {what} at {printable(str(path))}: {error.strerror}"
        raise DownloadError(msg) from None
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _not_a_file(path, mode, what)
        try:
            return handle.read(limit)
        except OSError as error:
            msg = f"cannot read the {what} at {printable(str(path))}: {error.strerror}"
            raise DownloadError(msg) from None


def verify_file(
    path: Path, size: int, sha256: str, what: str, progress: ProgressFn | None = None
) -> None:
    """Raise IntegrityError unless `path` is a regular file of the signed size and sha256."""
    actual_size = _regular_size(path, what)
    if actual_size != size:
        msg = f"{what}: {path} is {actual_size} bytes, expected {size}"
        raise IntegrityError(msg)
    try:
        actual = sha256_of(path, progress, size)
    except OSError as error:
        msg = f"{what}: cannot read {path} ({error.strerror})"
        raise DownloadError(msg) from None
    if actual != sha256:
        msg = (
            f"{what}: sha256 of {path} is {actual}, expected {sha256}: "
            "the file is corrupted or was tampered with"
        )
        raise IntegrityError(msg)

"""The per-install admin secret: `LLAMASHIP_HOME/admin-token`, 64 hex characters (256 bits).

The backend asks for it on every admin call (`Authorization: Bearer <token>`); the desktop
shell reads it from the file. On POSIX the file is created with mode 0600 from the start (never
readable by others, not even briefly) and refused or replaced when it is not private. On
Windows mode bits do not apply: the file is as private as `LLAMASHIP_HOME`, which defaults to
the user's own profile (`%LOCALAPPDATA%\\llamaship`). See docs/security.md.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import stat
import sys
from pathlib import Path

from llamaship_contract.errors import LlamashipError
from llamaship_contract.names import ADMIN_TOKEN_NAME, ExitStatus

logger = logging.getLogger(__name__)

TOKEN_PATTERN = re.compile(r"[0-9a-f]{64}")
_MAX_READ = 4096  # more than any valid token file; bounds what a planted file can make us read


class AdminTokenError(LlamashipError):
    """The admin token file cannot be used; the message names the file and the fix."""

    exit_code = ExitStatus.CONFIG


def token_path(home: Path) -> Path:
    return home / ADMIN_TOKEN_NAME


def read_or_create(home: Path) -> str:
    """The install's admin token, created on first use (also when the file was readable by
    others, since the old secret may have leaked)."""
    path = token_path(home)
    try:
        home.mkdir(parents=True, exist_ok=True)
        token = _read(path)
        if token is None:
            token = _create(path)
    except OSError as error:
        msg = f"Cannot read or create the admin token {path}: {error.strerror or error}."
        raise AdminTokenError(msg) from None
    return token


def _read(path: Path) -> str | None:
    """The token in `path`; None when there is none, or it was not private (then it is gone)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        descriptor = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError:
        if path.is_symlink():
            msg = f"The admin token {path} is a symbolic link: remove it; a new one is made."
            raise AdminTokenError(msg) from None
        raise
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            msg = f"The admin token {path} is not a regular file: remove it; a new one is made."
            raise AdminTokenError(msg)
        if not _is_private(path, status):
            path.unlink(missing_ok=True)
            return None
        content = os.read(descriptor, _MAX_READ)
    finally:
        os.close(descriptor)
    token = content.decode("ascii", errors="replace").strip()
    if TOKEN_PATTERN.fullmatch(token) is None:
        msg = (
            f"The admin token {path} does not hold 64 lowercase hex characters: remove it; "
            "a new one is made at the next start."
        )
        raise AdminTokenError(msg)
    return token


def _is_private(path: Path, status: os.stat_result) -> bool:
    """On POSIX: refuse another user's file; False (with a warning) when others may read it.
    Windows has no mode bits: there the profile directory's permissions protect the file."""
    if sys.platform == "win32":
        return True
    if status.st_uid != os.getuid():
        msg = (
            f"The admin token {path} belongs to another user (uid {status.st_uid}): "
            "remove it, or set LLAMASHIP_HOME to a directory of your own."
        )
        raise AdminTokenError(msg)
    if status.st_mode & 0o077:
        logger.warning(
            "the admin token %s was readable by others (mode %o): replacing it",
            path,
            stat.S_IMODE(status.st_mode),
        )
        return False
    return True


def _create(path: Path) -> str:
    """Write a fresh token to a private temporary file, then link it into place: readers see
    no file or the whole token, and of two processes racing, both end with the first's token."""
    token = secrets.token_hex(32)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    descriptor = os.open(temporary, flags, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(token.encode("ascii"))
            file.flush()
            os.fsync(file.fileno())
        os.link(temporary, path)
    except FileExistsError:
        existing = _read(path)
        if existing is None:
            msg = f"The admin token {path} changed while it was created: start again."
            raise AdminTokenError(msg) from None
        return existing
    finally:
        temporary.unlink(missing_ok=True)
    logger.info("created the admin token %s", path)
    return token

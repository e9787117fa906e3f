"""Resumable download of one archive to a file, checked against its signed size and sha256.

The archive streams to `<downloads>/<name>.part`, hashed while written, and is renamed to
`<name>` only when size and sha256 match. An interrupted download resumes with `Range` +
`If-Range` (the ETag or Last-Modified recorded in `<name>.part.meta`); a server that ignores
the range restarts from zero. Bodies are read raw and capped at the signed size; all attempts
together run under one deadline that grows with that size (`DownloadLimits.deadline_s`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from llamaship.io.fs import STORAGE_FULL_ERRNOS, DiskSpaceError, ensure_free_space, fsync_dir
from llamaship.io.http_session import (
    Expired,
    HttpSession,
    describe,
    refuse_encoding,
    status_text,
)
from llamaship.io.transfer import (
    DownloadError,
    DownloadIncomplete,
    FetchedFile,
    IntegrityError,
    ProgressFn,
)
from llamaship_contract.names import PART_SUFFIX
from llamaship_contract.textsafe import printable

if TYPE_CHECKING:
    import httpx

_log = logging.getLogger(__name__)

META_SUFFIX = f"{PART_SUFFIX}.meta"
_CHUNK = 256 * 1024
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_DIGITS = re.compile(r"[0-9]+")


class _Attempt(Exception):
    """One attempt failed in a way a retry may cure (internal)."""


class _Restart(_Attempt):
    """The partial file cannot be resumed: the retry starts from zero (internal)."""


def download_archive(
    session: HttpSession,
    url: str,
    downloads: Path,
    name: str,
    *,
    size: int,
    sha256: str | None,
    progress: ProgressFn | None = None,
) -> FetchedFile:
    """Download `url` to `downloads/name`, verified (`sha256=None`: any content of `size`
    bytes; `FetchedFile.sha256` then says what arrived)."""
    downloads.mkdir(parents=True, exist_ok=True)
    dest = downloads / name
    part = downloads / f"{name}{PART_SUFFIX}"
    try:
        actual = _Download(session, url, part, size, sha256, progress).run()
    except DownloadIncomplete:
        raise
    except DownloadError:
        _discard(part)
        raise
    except OSError as error:
        _discard(part)
        if error.errno in STORAGE_FULL_ERRNOS:
            msg = (
                f"the disk filled up while downloading {name} into {downloads} "
                f"({error.strerror}); free some space and try again"
            )
            raise DiskSpaceError(msg) from None
        msg = f"cannot write the download of {name} to {part}: {error.strerror or error}"
        raise DownloadError(msg) from None
    os.replace(part, dest)
    _meta(part).unlink(missing_ok=True)
    fsync_dir(downloads)
    return FetchedFile(path=dest, owned=True, sha256=actual)


class _Download:
    """The attempts at one archive, resuming `part` where it can."""

    def __init__(
        self,
        session: HttpSession,
        url: str,
        part: Path,
        size: int,
        sha256: str | None,
        progress: ProgressFn | None,
    ) -> None:
        self.session = session
        self.url = url
        self.part = part
        self.size = size
        self.sha256 = sha256
        self.progress = progress
        self.received = 0  # bytes of the archive on disk now

    def run(self) -> str:
        """The sha256 of the complete file; raises when it is too slow or does not match."""
        shown = printable(self.url)
        limits = self.session.limits

        async def attempts() -> str:
            last_problem = "no attempt was made"
            for attempt in range(1, limits.max_attempts + 1):
                try:
                    return await self._attempt()
                except _Attempt as problem:
                    if isinstance(problem, _Restart):
                        _discard(self.part)
                    last_problem = str(problem)
                    _log.info("download of %s, attempt %d failed: %s", shown, attempt, problem)
                    if attempt < limits.max_attempts:
                        await asyncio.sleep(limits.retry_pause_s * attempt)
            msg = (
                f"download of {shown} failed after {limits.max_attempts} attempts: "
                f"{last_problem}; check the network and try again"
            )
            raise DownloadIncomplete(msg)

        started = time.monotonic()
        try:
            actual = self.session.run(attempts, limits.deadline_s(self.size))
        except Expired:
            msg = (
                f"{shown} is too slow: {self.received} of {self.size} bytes arrived within "
                f"the {time.monotonic() - started:.0f} s allowed; try again later"
            )
            raise DownloadError(msg) from None
        if self.sha256 is not None and actual != self.sha256:
            _discard(self.part)
            msg = (
                f"the download of {shown} is corrupted or was tampered with: its sha256 is "
                f"{actual}, expected {self.sha256}; it was deleted, try again"
            )
            raise IntegrityError(msg)
        return actual

    def _resume_offset(self) -> tuple[int, str | None]:
        """How many bytes of `part` can be kept, and the validator for If-Range."""
        part = self.part
        try:
            offset = part.stat().st_size
            meta = json.loads(_meta(part).read_text())
        except (OSError, ValueError):
            _discard(part)
            return 0, None
        validator = meta.get("validator") if isinstance(meta, dict) else None
        same_file = (
            isinstance(meta, dict)
            and meta.get("url") == self.url
            and meta.get("sha256") == self.sha256
        )
        if not same_file or not isinstance(validator, str) or not 0 < offset < self.size:
            _discard(part)
            return 0, None
        return offset, validator

    async def _attempt(self) -> str:
        """Fetch the rest of the file into `part`; the sha256 of the whole file when complete."""
        import httpx

        part, size = self.part, self.size
        offset, validator = self._resume_offset()
        headers = {} if validator is None else {"Range": f"bytes={offset}-", "If-Range": validator}
        ensure_free_space(
            part.parent, size - offset, f"the download of {part.name[: -len(PART_SUFFIX)]}"
        )
        try:
            async with self.session.client().stream("GET", self.url, headers=headers) as response:
                offset = self._check_response(response, offset)
                answer = response.headers
                new_validator = answer.get("etag") or answer.get("last-modified")
                if new_validator is None:
                    _meta(part).unlink(missing_ok=True)
                else:
                    _meta(part).write_text(
                        json.dumps(
                            {"url": self.url, "sha256": self.sha256, "validator": new_validator}
                        )
                    )
                with part.open("r+b" if offset else "wb") as handle:
                    digest = _hash_prefix(handle, offset)
                    done = await self._receive(response, handle, digest, offset)
                    handle.flush()
                    os.fsync(handle.fileno())
        except httpx.InvalidURL as error:
            msg = f"cannot download {printable(self.url)}: {describe(error)}"
            raise DownloadError(msg) from None
        except httpx.HTTPError as error:
            raise _Attempt(describe(error)) from None
        if done < size:
            raise _Attempt(f"the connection ended after {done} of {size} bytes")
        return str(digest.hexdigest())

    def _check_response(self, response: httpx.Response, offset: int) -> int:
        """The offset the body starts at; raises for answers that cannot be used."""
        shown = printable(self.url)
        size = self.size
        refuse_encoding(response, shown)
        status = response.status_code
        if status >= 500 or status == 429:
            raise _Attempt(f"the server answered {status_text(response)}")
        if status == 200:
            if offset:
                _log.info("%s ignored the range request; restarting from zero", shown)
            length = response.headers.get("content-length")
            if length is not None and _DIGITS.fullmatch(length) and int(length) != size:
                msg = (
                    f"{shown} is {length} bytes, expected {size}: the server holds a different file"
                )
                raise DownloadError(msg)
            return 0
        if status == 206:
            got = response.headers.get("content-range", "")
            match = _CONTENT_RANGE.fullmatch(got.strip())
            if (
                match is None
                or int(match[1]) != offset
                or int(match[2]) != size - 1
                or (match[3] != "*" and int(match[3]) != size)
            ):
                if offset == 0:
                    msg = (
                        f"{shown} answered a whole-file request with a partial body "
                        f"(Content-Range '{printable(got, 80)}')"
                    )
                    raise DownloadError(msg)
                raise _Restart(
                    f"the server sent Content-Range '{printable(got, 80)}' for a "
                    f"request from byte {offset} of {size}; restarting from zero"
                )
            return offset
        msg = f"cannot download {shown}: the server answered {status_text(response)}"
        raise DownloadError(msg)

    async def _receive(
        self, response: httpx.Response, handle: BinaryIO, digest: Any, offset: int
    ) -> int:
        size = self.size
        done = offset
        self.received = done
        async for chunk in response.aiter_raw():  # as it arrives: a cut connection keeps the rest
            if done + len(chunk) > size:
                msg = (
                    f"{printable(self.url)} sent more than the signed size of {size} bytes: "
                    "download aborted and deleted"
                )
                raise DownloadError(msg)
            handle.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            self.received = done
            if done == len(chunk) + offset:
                handle.flush()  # the first chunk is on disk when progress first reports
            if self.progress is not None:
                self.progress(done, size)
        return done


def _hash_prefix(handle: BinaryIO, offset: int) -> Any:
    """A sha256 object fed with the first `offset` bytes of `handle`, which is cut there."""
    digest = hashlib.sha256()
    remaining = offset
    while remaining:
        chunk = handle.read(min(_CHUNK, remaining))
        if not chunk:
            break
        digest.update(chunk)
        remaining -= len(chunk)
    handle.truncate(offset)
    handle.seek(offset)
    return digest


def _meta(part: Path) -> Path:
    return part.with_name(part.name[: -len(PART_SUFFIX)] + META_SUFFIX)


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    _meta(part).unlink(missing_ok=True)

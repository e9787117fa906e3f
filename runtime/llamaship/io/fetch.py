"""Fetch overlay files from HTTP(S) URLs, file:// URLs or plain paths, checked against signed
values, every remote read bounded in time and in bytes.

Every HTTP read runs under a total deadline, headers and retries included (`asyncio.timeout` over
an async httpx client: a server dripping its headers or body one byte at a time is cut off when
it passes, not just when it falls silent). Responses are never decoded: `Accept-Encoding:
identity` is sent, an answer with any other `Content-Encoding` is refused, and bodies are read
raw and capped (a small file at its `max_size`, an archive at its signed size).

Archives stream to `<downloads>/<name>.part`, hashed while written, and are renamed to `<name>`
only when size and sha256 match. An interrupted download resumes with `Range` + `If-Range` (the
ETag or Last-Modified recorded in `<name>.part.meta`); a server that ignores the range restarts
from zero. Local files are verified in place, never copied; a FIFO, device or directory where a
file is expected is refused at once. Text a server sends is escaped before it is shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import stat
import time
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Self, TypeVar

from llamaship.io.fs import (
    STORAGE_FULL_ERRNOS,
    DiskSpaceError,
    ensure_free_space,
    fsync_dir,
)
from llamaship_contract.errors import LlamashipError
from llamaship_contract.hashing import sha256_of
from llamaship_contract.names import PART_SUFFIX, ExitStatus
from llamaship_contract.textsafe import printable

if TYPE_CHECKING:
    import httpx

_log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
"""Called with (bytes done, bytes total) as a file arrives."""

META_SUFFIX = f"{PART_SUFFIX}.meta"
_CHUNK = 256 * 1024
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_DIGITS = re.compile(r"[0-9]+")
# Open flags that make opening a FIFO return at once (POSIX) and keep bytes as they are (Windows).
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_BINARY", 0)
)
_CLOSE_TIMEOUT_S = 2.0
_T = TypeVar("_T")


class DownloadError(LlamashipError):
    """A file could not be fetched (network, server or size problem)."""

    exit_code = ExitStatus.DOWNLOAD


class DownloadIncomplete(DownloadError):
    """Every attempt broke off; the partial file is kept so a later install resumes it."""


class IntegrityError(DownloadError):
    """A fetched file does not match its signed size or sha256."""

    exit_code = ExitStatus.INTEGRITY


@dataclass(frozen=True)
class DownloadLimits:
    """Timeouts and retries. Each read has a total deadline, headers and retries included:
    `small_file_deadline_s` for an index, manifest or signature, and for an archive one that
    grows with its signed size (`deadline_s`)."""

    connect_timeout_s: float = 15.0
    # Silence on a connection this long fails the attempt (a retry may follow).
    read_timeout_s: float = 30.0
    small_file_deadline_s: float = 60.0
    # An archive slower than this on average is abandoned (its deadline passes).
    min_bytes_per_second: int = 32 * 1024
    deadline_grace_s: float = 120.0
    max_attempts: int = 4
    retry_pause_s: float = 1.0

    def deadline_s(self, size: int) -> float:
        """The total time allowed for an archive of `size` bytes, all attempts together."""
        return self.deadline_grace_s + size / self.min_bytes_per_second


@dataclass(frozen=True)
class FetchedFile:
    """A verified archive; `owned` is True when it is a download this install may delete."""

    path: Path
    owned: bool
    sha256: str | None = None  # the content's sha256, when it was computed or checked


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


def _read_local(path: Path, limit: int, what: str) -> bytes:
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
        msg = f"{what}: {path} is {actual_size} bytes, the signed manifest says {size}"
        raise IntegrityError(msg)
    try:
        actual = sha256_of(path, progress, size)
    except OSError as error:
        msg = f"{what}: cannot read {path} ({error.strerror})"
        raise DownloadError(msg) from None
    if actual != sha256:
        msg = (
            f"{what}: sha256 of {path} is {actual}, the signed manifest says {sha256}: "
            "the file is corrupted or was tampered with"
        )
        raise IntegrityError(msg)


class _Attempt(Exception):
    """One attempt failed in a way a retry may cure (internal)."""


class _Restart(_Attempt):
    """The partial file cannot be resumed: the retry starts from zero (internal)."""


class _Expired(Exception):
    """The total deadline of a read passed (internal)."""


class Fetcher:
    """Fetches index, manifests and archives; use as a context manager (closes its client).

    `deadline_s`, when given, bounds everything this fetcher does from its creation (e.g. the
    launch-time availability check); each read also has its own deadline (`DownloadLimits`).
    """

    def __init__(
        self, limits: DownloadLimits | None = None, *, deadline_s: float | None = None
    ) -> None:
        self.limits = limits or DownloadLimits()
        self._deadline = None if deadline_s is None else time.monotonic() + deadline_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._received = 0  # bytes of the archive being fetched now on disk

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP client and its event loop (never waiting for a stuck DNS lookup)."""
        loop, client = self._loop, self._client
        self._loop = self._client = None
        if loop is None:
            return
        try:
            if client is not None:
                loop.run_until_complete(asyncio.wait_for(client.aclose(), _CLOSE_TIMEOUT_S))
        except (OSError, TimeoutError) as error:
            _log.debug("closing the HTTP client: %s", error)
        finally:
            # loop.close() shuts its resolver threads down without waiting (asyncio.run would
            # wait for a getaddrinfo call still hanging).
            loop.close()

    def _http(self) -> httpx.AsyncClient:
        import httpx  # lazy: only installs over the network need it

        if self._client is None:
            timeout = httpx.Timeout(
                self.limits.read_timeout_s, connect=self.limits.connect_timeout_s
            )
            self._client = httpx.AsyncClient(
                timeout=timeout, follow_redirects=True, headers={"Accept-Encoding": "identity"}
            )
        return self._client

    def _run(self, work: Callable[[], Awaitable[_T]], seconds: float) -> _T:
        """Run `work` within `seconds` (and the fetcher's own deadline); raises `_Expired`."""
        deadline = time.monotonic() + seconds
        if self._deadline is not None:
            deadline = min(deadline, self._deadline)

        async def bounded() -> _T:
            scope = asyncio.timeout_at(deadline)  # the loop's clock is time.monotonic
            try:
                async with scope:
                    return await work()
            except TimeoutError:
                if scope.expired():
                    raise _Expired from None
                raise

        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        task = self._loop.create_task(bounded())
        try:
            return self._loop.run_until_complete(task)
        except BaseException:  # e.g. Ctrl-C while the loop waited: stop the read, then go on
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    self._loop.run_until_complete(task)
            raise

    # -- small files: index, manifests, signatures --------------------------------------------

    def read(self, location: str, *, max_size: int, what: str) -> bytes:
        """The whole content of a small file; refuses one larger than `max_size`."""
        path = local_path(location)
        if path is not None:
            data = _read_local(path, max_size + 1, what)
        else:
            data = self._read_http(location, max_size, what)
        if len(data) > max_size:
            msg = f"the {what} at {printable(location)} is larger than {max_size} bytes: refused"
            raise DownloadError(msg)
        return data

    def _read_http(self, url: str, max_size: int, what: str) -> bytes:
        import httpx

        shown = printable(url)

        async def receive() -> bytes:
            async with self._http().stream("GET", url) as response:
                _refuse_encoding(response, shown)
                if response.status_code != 200:
                    msg = f"cannot fetch the {what}: {shown} answered {_status(response)}"
                    raise DownloadError(msg)
                data = bytearray()
                async for chunk in response.aiter_raw():  # raw: never decoded
                    data += chunk
                    if len(data) > max_size:
                        break
                return bytes(data)

        started = time.monotonic()
        try:
            data = self._run(receive, self.limits.small_file_deadline_s)
        except _Expired:
            msg = (
                f"the {what} at {shown} did not arrive within "
                f"{time.monotonic() - started:.1f} s: the server is too slow or stalling; "
                "try again later"
            )
            raise DownloadError(msg) from None
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            msg = f"cannot fetch the {what} from {shown}: {_describe(error)}"
            raise DownloadError(msg) from None
        return data

    def content_length(self, url: str, *, max_size: int, what: str) -> int:
        """The size an http(s) URL announces (HEAD, redirects followed), at most `max_size`."""
        import httpx

        shown = printable(url)

        async def ask() -> httpx.Response:
            return await self._http().head(url)

        try:
            response = self._run(ask, self.limits.small_file_deadline_s)
        except _Expired:
            limit = self.limits.small_file_deadline_s
            msg = f"{shown} did not answer within {limit:g} s; try again later"
            raise DownloadError(msg) from None
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            msg = f"cannot reach the {what} at {shown}: {_describe(error)}"
            raise DownloadError(msg) from None
        if response.status_code != 200:
            msg = f"cannot download the {what}: {shown} answered {_status(response)}"
            raise DownloadError(msg)
        length = response.headers.get("content-length", "")
        if not _DIGITS.fullmatch(length) or not 0 < int(length) <= max_size:
            msg = (
                f"{shown} does not announce a size between 1 and {max_size} bytes "
                f"(Content-Length '{printable(length, 40)}'): refused"
            )
            raise DownloadError(msg)
        return int(length)

    # -- archives -----------------------------------------------------------------------------

    def fetch(
        self,
        location: str,
        downloads: Path,
        name: str,
        *,
        size: int,
        sha256: str | None,
        progress: ProgressFn | None = None,
    ) -> FetchedFile:
        """A verified copy of the archive at `location` (local files are verified in place).

        `sha256=None` takes any content of `size` bytes (the caller accepted an unverified
        file; only downloads): `FetchedFile.sha256` then says what arrived.
        """
        path = local_path(location)
        if path is not None:
            if sha256 is None:
                msg = f"{printable(location)}: a local file is only used with its sha256"
                raise DownloadError(msg)
            verify_file(path, size, sha256, f"archive {name}", progress)
            return FetchedFile(path=path, owned=False, sha256=sha256)
        downloads.mkdir(parents=True, exist_ok=True)
        dest = downloads / name
        part = downloads / f"{name}{PART_SUFFIX}"
        try:
            actual = self._download(location, part, size=size, sha256=sha256, progress=progress)
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

    def _download(
        self, url: str, part: Path, *, size: int, sha256: str | None, progress: ProgressFn | None
    ) -> str:
        shown = printable(url)

        async def attempts() -> str:
            last_problem = "no attempt was made"
            for attempt in range(1, self.limits.max_attempts + 1):
                try:
                    return await self._attempt(
                        url, part, size=size, sha256=sha256, progress=progress
                    )
                except _Attempt as problem:
                    if isinstance(problem, _Restart):
                        _discard(part)
                    last_problem = str(problem)
                    _log.info("download of %s, attempt %d failed: %s", shown, attempt, problem)
                    if attempt < self.limits.max_attempts:
                        await asyncio.sleep(self.limits.retry_pause_s * attempt)
            msg = (
                f"download of {shown} failed after {self.limits.max_attempts} attempts: "
                f"{last_problem}; check the network and try again"
            )
            raise DownloadIncomplete(msg)

        self._received = 0
        started = time.monotonic()
        try:
            actual = self._run(attempts, self.limits.deadline_s(size))
        except _Expired:
            msg = (
                f"{shown} is too slow: {self._received} of {size} bytes arrived within the "
                f"{time.monotonic() - started:.0f} s allowed; try again later"
            )
            raise DownloadError(msg) from None
        if sha256 is not None and actual != sha256:
            _discard(part)
            msg = (
                f"the download of {shown} is corrupted or was tampered with: its sha256 is "
                f"{actual}, the signed manifest says {sha256}; it was deleted, try again"
            )
            raise IntegrityError(msg)
        return actual

    def _resume_offset(
        self, url: str, part: Path, size: int, sha256: str | None
    ) -> tuple[int, str | None]:
        """How many bytes of `part` can be kept, and the validator for If-Range."""
        try:
            offset = part.stat().st_size
            meta = json.loads(_meta(part).read_text())
        except (OSError, ValueError):
            _discard(part)
            return 0, None
        validator = meta.get("validator") if isinstance(meta, dict) else None
        same_file = (
            isinstance(meta, dict) and meta.get("url") == url and meta.get("sha256") == sha256
        )
        if not same_file or not isinstance(validator, str) or not 0 < offset < size:
            _discard(part)
            return 0, None
        return offset, validator

    async def _attempt(
        self, url: str, part: Path, *, size: int, sha256: str | None, progress: ProgressFn | None
    ) -> str:
        """Fetch the rest of `url` into `part`; the sha256 of the whole file when complete."""
        import httpx

        offset, validator = self._resume_offset(url, part, size, sha256)
        headers = {} if validator is None else {"Range": f"bytes={offset}-", "If-Range": validator}
        ensure_free_space(
            part.parent, size - offset, f"the download of {part.name[: -len(PART_SUFFIX)]}"
        )
        try:
            async with self._http().stream("GET", url, headers=headers) as response:
                offset = self._check_response(response, url, offset, size)
                answer = response.headers
                new_validator = answer.get("etag") or answer.get("last-modified")
                if new_validator is None:
                    _meta(part).unlink(missing_ok=True)
                else:
                    _meta(part).write_text(
                        json.dumps({"url": url, "sha256": sha256, "validator": new_validator})
                    )
                with part.open("r+b" if offset else "wb") as handle:
                    digest = _hash_prefix(handle, offset)
                    done = await self._receive(
                        response, handle, digest, url, offset, size, progress
                    )
                    handle.flush()
                    os.fsync(handle.fileno())
        except httpx.InvalidURL as error:
            msg = f"cannot download {printable(url)}: {_describe(error)}"
            raise DownloadError(msg) from None
        except httpx.HTTPError as error:
            raise _Attempt(_describe(error)) from None
        if done < size:
            raise _Attempt(f"the connection ended after {done} of {size} bytes")
        return str(digest.hexdigest())

    def _check_response(self, response: httpx.Response, url: str, offset: int, size: int) -> int:
        """The offset the body starts at; raises for answers that cannot be used."""
        shown = printable(url)
        _refuse_encoding(response, shown)
        status = response.status_code
        if status >= 500 or status == 429:
            raise _Attempt(f"the server answered {_status(response)}")
        if status == 200:
            if offset:
                _log.info("%s ignored the range request; restarting from zero", shown)
            length = response.headers.get("content-length")
            if length is not None and _DIGITS.fullmatch(length) and int(length) != size:
                msg = (
                    f"{shown} is {length} bytes, the signed manifest says {size}: "
                    "the server holds a different file"
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
        msg = f"cannot download {shown}: the server answered {_status(response)}"
        raise DownloadError(msg)

    async def _receive(
        self,
        response: httpx.Response,
        handle: BinaryIO,
        digest: Any,
        url: str,
        offset: int,
        size: int,
        progress: ProgressFn | None,
    ) -> int:
        done = offset
        self._received = done
        async for chunk in response.aiter_raw():  # as it arrives: a cut connection keeps the rest
            if done + len(chunk) > size:
                msg = (
                    f"{printable(url)} sent more than the signed size of {size} bytes: "
                    "download aborted and deleted"
                )
                raise DownloadError(msg)
            handle.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            self._received = done
            if done == len(chunk) + offset:
                handle.flush()  # the first chunk is on disk when progress first reports
            if progress is not None:
                progress(done, size)
        return done


def _refuse_encoding(response: httpx.Response, shown_url: str) -> None:
    """Refuse an answer in a `Content-Encoding` that was not asked for: it is never decoded."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        msg = (
            f"{shown_url} answered with Content-Encoding '{printable(encoding, 40)}' although "
            "only the identity encoding was asked for: refused without decoding it (a "
            "compressed answer can expand without bound); fix the server or use a mirror"
        )
        raise DownloadError(msg)


def _status(response: httpx.Response) -> str:
    """`HTTP 404 Not Found`, the server's reason phrase escaped."""
    reason = printable(response.reason_phrase, 60)
    return f"HTTP {response.status_code} {reason}".rstrip()


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


def _describe(error: BaseException) -> str:
    """An exception's type and text, escaped (its text may quote what a server sent)."""
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {printable(text, 300)}"

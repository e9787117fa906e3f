"""Fetch overlay files from HTTP(S) URLs, file:// URLs or plain paths, checked against signed
values.

Archives stream to `<downloads>/<name>.part`, hashed while written, capped at the signed size,
and are renamed to `<name>` only when size and sha256 match. An interrupted download resumes
with `Range` + `If-Range` (the ETag or Last-Modified recorded in `<name>.part.meta`); a server
that ignores the range restarts from zero. Local files are verified in place, never copied.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Self

from llamaship.errors import LlamashipError
from llamaship.overlay._fs import (
    STORAGE_FULL_ERRNOS,
    DiskSpaceError,
    ensure_free_space,
    fsync_dir,
)
from llamaship.overlay._testhook import pause_if_requested

if TYPE_CHECKING:
    import httpx

_log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
"""Called with (bytes done, bytes total) as a file arrives."""

PART_SUFFIX = ".part"
META_SUFFIX = ".part.meta"
_CHUNK = 256 * 1024
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class DownloadError(LlamashipError):
    """A file could not be fetched (network, server or size problem)."""

    exit_code = 8


class DownloadIncomplete(DownloadError):
    """Every attempt broke off; the partial file is kept so a later install resumes it."""


class IntegrityError(DownloadError):
    """A fetched file does not match its signed size or sha256."""

    exit_code = 9


@dataclass(frozen=True)
class DownloadLimits:
    """Timeouts and retries; the overall deadline grows with the file size."""

    connect_timeout_s: float = 15.0
    read_timeout_s: float = 30.0
    # A download slower than this on average is abandoned (its deadline passes).
    min_bytes_per_second: int = 32 * 1024
    deadline_grace_s: float = 120.0
    max_attempts: int = 4
    retry_pause_s: float = 1.0

    def deadline_s(self, size: int) -> float:
        return self.deadline_grace_s + size / self.min_bytes_per_second


@dataclass(frozen=True)
class FetchedFile:
    """A verified archive; `owned` is True when it is a download this install may delete."""

    path: Path
    owned: bool


def local_path(location: str) -> Path | None:
    """The file a path or file:// URL names, or None for an http(s) URL."""
    parts = urllib.parse.urlsplit(location)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return None
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            msg = (f"{location}: file:// URLs on another host are not supported; "
                   "copy the files locally")
            raise DownloadError(msg)
        return Path(urllib.request.url2pathname(parts.path))
    if scheme == "" or len(scheme) == 1:  # a plain path (one letter: a Windows drive)
        return Path(location)
    msg = f"{location}: unsupported URL scheme {scheme!r}; use https://, http://, file:// or a path"
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


def sha256_of(path: Path, progress: ProgressFn | None = None, total: int = 0) -> str:
    digest = hashlib.sha256()
    done = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    return digest.hexdigest()


def verify_file(path: Path, size: int, sha256: str, what: str,
                progress: ProgressFn | None = None) -> None:
    """Raise IntegrityError unless `path` has exactly the signed size and sha256."""
    try:
        actual_size = path.stat().st_size
    except OSError as error:
        msg = f"{what}: cannot read {path} ({error.strerror})"
        raise DownloadError(msg) from None
    if actual_size != size:
        msg = f"{what}: {path} is {actual_size} bytes, the signed manifest says {size}"
        raise IntegrityError(msg)
    actual = sha256_of(path, progress, size)
    if actual != sha256:
        msg = (f"{what}: sha256 of {path} is {actual}, the signed manifest says {sha256}: "
               "the file is corrupted or was tampered with")
        raise IntegrityError(msg)


class _Attempt(Exception):
    """One attempt failed in a way a retry may cure (internal)."""


class _Restart(_Attempt):
    """The partial file cannot be resumed: the retry starts from zero (internal)."""


class Fetcher:
    """Fetches index, manifests and archives; use as a context manager (closes its client)."""

    def __init__(self, limits: DownloadLimits | None = None) -> None:
        self.limits = limits or DownloadLimits()
        self._client: httpx.Client | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _http(self) -> httpx.Client:
        import httpx  # lazy: only installs over the network need it

        if self._client is None:
            timeout = httpx.Timeout(self.limits.read_timeout_s,
                                    connect=self.limits.connect_timeout_s)
            self._client = httpx.Client(timeout=timeout, follow_redirects=True,
                                        headers={"Accept-Encoding": "identity"})
        return self._client

    # -- small files: index, manifests, signatures --------------------------------------------

    def read(self, location: str, *, max_size: int, what: str) -> bytes:
        """The whole content of a small file; refuses one larger than `max_size`."""
        path = local_path(location)
        if path is not None:
            try:
                with path.open("rb") as handle:
                    data = handle.read(max_size + 1)
            except OSError as error:
                msg = f"cannot read the {what} at {path}: {error.strerror}"
                raise DownloadError(msg) from None
        else:
            data = self._read_http(location, max_size, what)
        if len(data) > max_size:
            msg = f"the {what} at {location} is larger than {max_size} bytes: refused"
            raise DownloadError(msg)
        return data

    def _read_http(self, url: str, max_size: int, what: str) -> bytes:
        import httpx

        deadline = time.monotonic() + self.limits.deadline_s(max_size)
        try:
            with self._http().stream("GET", url) as response:
                if response.status_code != 200:
                    msg = f"cannot fetch the {what}: {url} answered HTTP {response.status_code}"
                    raise DownloadError(msg)
                data = bytearray()
                for chunk in response.iter_bytes():
                    data += chunk
                    if len(data) > max_size:
                        break
                    if time.monotonic() > deadline:
                        msg = f"the {what} at {url} is too slow to arrive; try again later"
                        raise DownloadError(msg)
                return bytes(data)
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            msg = f"cannot fetch the {what} from {url}: {_describe(error)}"
            raise DownloadError(msg) from None

    # -- archives -----------------------------------------------------------------------------

    def fetch(self, location: str, downloads: Path, name: str, *, size: int, sha256: str,
              progress: ProgressFn | None = None) -> FetchedFile:
        """A verified copy of the archive at `location` (local files are verified in place)."""
        path = local_path(location)
        if path is not None:
            verify_file(path, size, sha256, f"archive {name}", progress)
            return FetchedFile(path=path, owned=False)
        downloads.mkdir(parents=True, exist_ok=True)
        dest = downloads / name
        part = downloads / f"{name}{PART_SUFFIX}"
        try:
            self._download(location, part, size=size, sha256=sha256, progress=progress)
        except DownloadIncomplete:
            raise
        except DownloadError:
            _discard(part)
            raise
        except OSError as error:
            _discard(part)
            if error.errno in STORAGE_FULL_ERRNOS:
                msg = (f"the disk filled up while downloading {name} into {downloads} "
                       f"({error.strerror}); free some space and try again")
                raise DiskSpaceError(msg) from None
            msg = f"cannot write the download of {name} to {part}: {error.strerror or error}"
            raise DownloadError(msg) from None
        os.replace(part, dest)
        _meta(part).unlink(missing_ok=True)
        fsync_dir(downloads)
        return FetchedFile(path=dest, owned=True)

    def _download(self, url: str, part: Path, *, size: int, sha256: str,
                  progress: ProgressFn | None) -> None:
        deadline = time.monotonic() + self.limits.deadline_s(size)
        last_problem = "no attempt was made"
        for attempt in range(1, self.limits.max_attempts + 1):
            try:
                actual = self._attempt(url, part, size=size, sha256=sha256, deadline=deadline,
                                       progress=progress)
                break
            except _Attempt as problem:
                if isinstance(problem, _Restart):
                    _discard(part)
                last_problem = str(problem)
                _log.info("download of %s, attempt %d failed: %s", url, attempt, problem)
                if attempt < self.limits.max_attempts:
                    time.sleep(self.limits.retry_pause_s * attempt)
        else:
            msg = (f"download of {url} failed after {self.limits.max_attempts} attempts: "
                   f"{last_problem}; check the network and try again")
            raise DownloadIncomplete(msg)
        if actual != sha256:
            _discard(part)
            msg = (f"the download of {url} is corrupted or was tampered with: its sha256 is "
                   f"{actual}, the signed manifest says {sha256}; it was deleted, try again")
            raise IntegrityError(msg)

    def _resume_offset(self, url: str, part: Path, size: int,
                       sha256: str) -> tuple[int, str | None]:
        """How many bytes of `part` can be kept, and the validator for If-Range."""
        try:
            offset = part.stat().st_size
            meta = json.loads(_meta(part).read_text())
        except (OSError, ValueError):
            _discard(part)
            return 0, None
        validator = meta.get("validator") if isinstance(meta, dict) else None
        same_file = (isinstance(meta, dict) and meta.get("url") == url
                     and meta.get("sha256") == sha256)
        if not same_file or not isinstance(validator, str) or not 0 < offset < size:
            _discard(part)
            return 0, None
        return offset, validator

    def _attempt(self, url: str, part: Path, *, size: int, sha256: str, deadline: float,
                 progress: ProgressFn | None) -> str:
        """Fetch the rest of `url` into `part`; the sha256 of the whole file when complete."""
        import httpx

        offset, validator = self._resume_offset(url, part, size, sha256)
        headers = {} if validator is None else {"Range": f"bytes={offset}-", "If-Range": validator}
        ensure_free_space(part.parent, size - offset, f"the download of {part.name[:-5]}")
        try:
            with self._http().stream("GET", url, headers=headers) as response:
                offset = self._check_response(response, url, offset, size)
                answer = response.headers
                new_validator = answer.get("etag") or answer.get("last-modified")
                if new_validator is None:
                    _meta(part).unlink(missing_ok=True)
                else:
                    _meta(part).write_text(json.dumps(
                        {"url": url, "sha256": sha256, "validator": new_validator}))
                with part.open("r+b" if offset else "wb") as handle:
                    digest = _hash_prefix(handle, offset)
                    done = self._receive(response, handle, digest, url, offset, size, deadline,
                                         progress)
                    handle.flush()
                    os.fsync(handle.fileno())
        except httpx.InvalidURL as error:
            msg = f"cannot download {url}: {_describe(error)}"
            raise DownloadError(msg) from None
        except httpx.HTTPError as error:
            raise _Attempt(_describe(error)) from None
        if done < size:
            raise _Attempt(f"the connection ended after {done} of {size} bytes")
        return str(digest.hexdigest())

    def _check_response(self, response: httpx.Response, url: str, offset: int, size: int) -> int:
        """The offset the body starts at; raises for answers that cannot be used."""
        status = response.status_code
        if status >= 500 or status == 429:
            raise _Attempt(f"the server answered HTTP {status}")
        if status == 200:
            if offset:
                _log.info("%s ignored the range request; restarting from zero", url)
            length = response.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) != size:
                msg = (f"{url} is {length} bytes, the signed manifest says {size}: "
                       "the server holds a different file")
                raise DownloadError(msg)
            return 0
        if status == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", "").strip())
            if match is None or int(match[1]) != offset or int(match[2]) != size - 1 or (
                    match[3] != "*" and int(match[3]) != size):
                got = response.headers.get("content-range")
                if offset == 0:
                    msg = (f"{url} answered a whole-file request with a partial body "
                           f"(Content-Range {got!r})")
                    raise DownloadError(msg)
                raise _Restart(f"the server sent Content-Range {got!r} for a request from byte "
                               f"{offset} of {size}; restarting from zero")
            return offset
        msg = f"cannot download {url}: the server answered HTTP {status}"
        raise DownloadError(msg)

    def _receive(self, response: httpx.Response, handle: BinaryIO, digest: Any, url: str,
                 offset: int, size: int, deadline: float, progress: ProgressFn | None) -> int:
        done = offset
        for chunk in response.iter_bytes():  # as it arrives: a cut connection keeps the rest
            if done + len(chunk) > size:
                msg = (f"{url} sent more than the signed size of {size} bytes: "
                       "download aborted and deleted")
                raise DownloadError(msg)
            handle.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, size)
            if done == len(chunk) + offset:
                handle.flush()
                pause_if_requested("download")
            if time.monotonic() > deadline:
                msg = (f"{url} is too slow: {done} of {size} bytes arrived within the "
                       f"{self.limits.deadline_s(size):.0f} s allowed; try again later")
                raise DownloadError(msg)
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


def _describe(error: Any) -> str:
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}"

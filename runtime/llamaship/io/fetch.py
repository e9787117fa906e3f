"""Fetch overlay files and models from HTTP(S) URLs, file:// URLs or plain paths, checked against
signed values, every remote read bounded in time and in bytes.

`Fetcher` is the one entry point: small files (index, manifests, signatures) are read whole and
capped at their `max_size`; archives are verified in place when local (`local_files`) and
downloaded resumably otherwise (`resumable`). Every HTTP read goes through a bounded session
(`http_session`): a total deadline, raw bodies, no `Content-Encoding` but identity.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from llamaship.io.http_session import (
    DownloadLimits,
    Expired,
    HttpSession,
    describe,
    refuse_encoding,
    status_text,
)
from llamaship.io.local_files import local_path, read_local, verify_file
from llamaship.io.resumable import download_archive
from llamaship.io.transfer import DownloadError, FetchedFile, ProgressFn
from llamaship_contract.textsafe import printable

if TYPE_CHECKING:
    import httpx

_DIGITS = re.compile(r"[0-9]+")


class Fetcher:
    """Fetches index, manifests and archives; use as a context manager (closes its client).

    `deadline_s`, when given, bounds everything this fetcher does from its creation (e.g. the
    launch-time availability check); each read also has its own deadline (`DownloadLimits`).
    """

    def __init__(
        self, limits: DownloadLimits | None = None, *, deadline_s: float | None = None
    ) -> None:
        self.limits = limits or DownloadLimits()
        self._session = HttpSession(self.limits, deadline_s)

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
        self._session.close()

    # -- small files: index, manifests, signatures --------------------------------------------

    def read(self, location: str, *, max_size: int, what: str) -> bytes:
        """The whole content of a small file; refuses one larger than `max_size`."""
        path = local_path(location)
        if path is not None:
            data = read_local(path, max_size + 1, what)
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
            async with self._session.client().stream("GET", url) as response:
                refuse_encoding(response, shown)
                if response.status_code != 200:
                    msg = f"cannot fetch the {what}: {shown} answered {status_text(response)}"
                    raise DownloadError(msg)
                data = bytearray()
                async for chunk in response.aiter_raw():  # raw: never decoded
                    data += chunk
                    if len(data) > max_size:
                        break
                return bytes(data)

        started = time.monotonic()
        try:
            data = self._session.run(receive, self.limits.small_file_deadline_s)
        except Expired:
            msg = (
                f"the {what} at {shown} did not arrive within "
                f"{time.monotonic() - started:.1f} s: the server is too slow or stalling; "
                "try again later"
            )
            raise DownloadError(msg) from None
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            msg = f"cannot fetch the {what} from {shown}: {describe(error)}"
            raise DownloadError(msg) from None
        return data

    def content_length(self, url: str, *, max_size: int, what: str) -> int:
        """The size an http(s) URL announces (HEAD, redirects followed), at most `max_size`."""
        import httpx

        shown = printable(url)

        async def ask() -> httpx.Response:
            return await self._session.client().head(url)

        try:
            response = self._session.run(ask, self.limits.small_file_deadline_s)
        except Expired:
            limit = self.limits.small_file_deadline_s
            msg = f"{shown} did not answer within {limit:g} s; try again later"
            raise DownloadError(msg) from None
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            msg = f"cannot reach the {what} at {shown}: {describe(error)}"
            raise DownloadError(msg) from None
        if response.status_code != 200:
            msg = f"cannot download the {what}: {shown} answered {status_text(response)}"
            raise DownloadError(msg)
        length = response.headers.get("content-length", "")
        if not _DIGITS.fullmatch(length) or not 0 < int(length) <= max_size:
            msg = (
                f"{shown} does not announce a size between 1 and {max_size} bytes "
                f"(Content-Length '{printable(length, 40)}'): refused"
            )
            raise DownloadError(msg)
        return int(length)

    def head(self, url: str, *, what: str) -> httpx.Response:
        """The answer to a HEAD on an http(s) URL, redirects NOT followed (the caller reads the
        headers of a redirect itself), bounded like a small file."""
        import httpx

        shown = printable(url)

        async def ask() -> httpx.Response:
            return await self._session.client().head(url, follow_redirects=False)

        try:
            return self._session.run(ask, self.limits.small_file_deadline_s)
        except Expired:
            limit = self.limits.small_file_deadline_s
            msg = f"{shown} did not answer within {limit:g} s; try again later"
            raise DownloadError(msg) from None
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            msg = f"cannot reach the {what} at {shown}: {describe(error)}"
            raise DownloadError(msg) from None

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
        if path is None:
            return download_archive(
                self._session,
                location,
                downloads,
                name,
                size=size,
                sha256=sha256,
                progress=progress,
            )
        if sha256 is None:
            msg = f"{printable(location)}: a local file is only used with its sha256"
            raise DownloadError(msg)
        verify_file(path, size, sha256, f"archive {name}", progress)
        return FetchedFile(path=path, owned=False, sha256=sha256)

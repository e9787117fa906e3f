"""Bounded HTTP: an httpx client whose every read runs under a total deadline.

The deadline covers headers and retries (`asyncio.timeout` over an async httpx client): a
server dripping its headers or body one byte at a time is cut off when it passes, not just when
it falls silent. Responses are never decoded: `Accept-Encoding: identity` is sent and an answer
with any other `Content-Encoding` is refused. Text a server sends is escaped before it is shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Self, TypeVar

from llamaship.io.transfer import DownloadError
from llamaship_contract.textsafe import printable

if TYPE_CHECKING:
    import httpx

_log = logging.getLogger(__name__)

_CLOSE_TIMEOUT_S = 2.0
_T = TypeVar("_T")


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


class Expired(Exception):
    """The total deadline of a read passed; the caller says what was too slow."""


class HttpSession:
    """An httpx client on its own event loop, created on first use; close it when done.

    `deadline_s`, when given, bounds everything this session does from its creation; each
    `run` also has its own deadline.
    """

    def __init__(self, limits: DownloadLimits, deadline_s: float | None = None) -> None:
        self.limits = limits
        self._deadline = None if deadline_s is None else time.monotonic() + deadline_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None

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

    def client(self) -> httpx.AsyncClient:
        """The client (identity encoding, redirects followed, the limits' timeouts)."""
        import httpx  # lazy: only installs over the network need it

        if self._client is None:
            timeout = httpx.Timeout(
                self.limits.read_timeout_s, connect=self.limits.connect_timeout_s
            )
            self._client = httpx.AsyncClient(
                timeout=timeout, follow_redirects=True, headers={"Accept-Encoding": "identity"}
            )
        return self._client

    def run(self, work: Callable[[], Awaitable[_T]], seconds: float) -> _T:
        """Run `work` within `seconds` (and the session's own deadline); raises `Expired`."""
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
                    raise Expired from None
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


def refuse_encoding(response: httpx.Response, shown_url: str) -> None:
    """Refuse an answer in a `Content-Encoding` that was not asked for: it is never decoded."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        msg = (
            f"{shown_url} answered with Content-Encoding '{printable(encoding, 40)}' although "
            "only the identity encoding was asked for: refused without decoding it (a "
            "compressed answer can expand without bound); fix the server or use a mirror"
        )
        raise DownloadError(msg)


def status_text(response: httpx.Response) -> str:
    """`HTTP 404 Not Found`, the server's reason phrase escaped."""
    reason = printable(response.reason_phrase, 60)
    return f"HTTP {response.status_code} {reason}".rstrip()


def describe(error: BaseException) -> str:
    """An exception's type and text, escaped (its text may quote what a server sent)."""
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {printable(text, 300)}"

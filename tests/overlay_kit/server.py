"""An HTTP server on 127.0.0.1 that serves a release folder with ETag and Range support and
misbehaves on request: truncated bodies, ignored or wrong ranges, bit flips, endless bodies,
slow drips, missing files."""

from __future__ import annotations

import hashlib
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar


@dataclass(frozen=True)
class Request:
    """One request the server saw."""

    path: str
    range: str | None
    if_range: str | None
    status: int


# truncate: promise the whole body, send half, hang up; ignore_range: answer 200 with the whole
# file to a range request; wrong_range: answer a range request with a Content-Range that starts
# one byte later; bogus_206: answer any request with a 206 missing the first byte; flip: one bit
# flipped mid-file; endless: no length, the file then zeros forever; slow: 16 bytes per 20 ms;
# paced: the whole file at about 20 MB/s (1 MiB per 50 ms), long enough for a page polling
# every 300 ms to see the download; missing: 404; unavailable: 503.
FAULTS = (
    "truncate",
    "ignore_range",
    "wrong_range",
    "bogus_206",
    "flip",
    "endless",
    "slow",
    "paced",
    "missing",
    "unavailable",
)


class OverlayServer(ThreadingHTTPServer):
    """Serves `root` with ETag + Range support; `inject` makes chosen requests misbehave."""

    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.requests: list[Request] = []
        self._faults: dict[str, list[str]] = {}
        self._forever: dict[str, str] = {}
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def inject(self, name: str, *faults: str, forever: bool = False) -> None:
        """The next requests for `name` get `faults` in turn (or the one fault on every request)."""
        assert all(fault in FAULTS for fault in faults), faults
        with self._lock:
            if forever:
                (self._forever[name],) = faults
            else:
                self._faults.setdefault(name, []).extend(faults)

    def next_fault(self, name: str) -> str | None:
        with self._lock:
            queue = self._faults.get(name)
            if queue:
                return queue.pop(0)
            return self._forever.get(name)

    def log(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def requested(self, name: str) -> list[Request]:
        with self._lock:
            return [request for request in self.requests if request.path == name]

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hang up on the hostile answers on purpose: not an error worth printing."""


class _Handler(BaseHTTPRequestHandler):
    server: OverlayServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads `OverlayServer.requests` instead."""

    def _send(self, status: int, headers: Mapping[str, str], body: bytes, name: str) -> None:
        self.server.log(
            Request(name, self.headers.get("Range"), self.headers.get("If-Range"), status)
        )
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        name = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        path = self.server.root / name
        fault = self.server.next_fault(name)
        if fault == "unavailable":
            self._send(503, {"Content-Length": "0"}, b"", name)
            return
        if fault == "missing" or not path.is_file():
            self._send(404, {"Content-Length": "0"}, b"", name)
            return
        data = path.read_bytes()
        etag = f'"{hashlib.sha256(data).hexdigest()[:16]}"'
        size = len(data)
        if fault == "flip":
            data = data[: size // 2] + bytes([data[size // 2] ^ 0x01]) + data[size // 2 + 1 :]
        if fault == "endless":
            self._endless(name, data)
            return
        if fault in ("slow", "paced"):
            self._drip(name, data, etag, *((16, 0.02) if fault == "slow" else (1 << 20, 0.05)))
            return
        start = self._range_start(etag, size) if fault != "ignore_range" else None
        if fault == "bogus_206":
            start = 1
        headers = {"ETag": etag, "Accept-Ranges": "bytes"}
        if start is None:
            status, body = 200, data
        else:
            status, body = 206, data[start:]
            first = start + 1 if fault == "wrong_range" else start
            headers["Content-Range"] = f"bytes {first}-{size - 1}/{size}"
        headers["Content-Length"] = str(len(body))
        if fault == "truncate":
            self._send(status, headers, body[: len(body) // 2], name)
            self.close_connection = True
            return
        self._send(status, headers, body, name)

    def _range_start(self, etag: str, size: int) -> int | None:
        requested = self.headers.get("Range", "")
        if not requested.startswith("bytes=") or not requested.endswith("-"):
            return None
        if_range = self.headers.get("If-Range")
        if if_range is not None and if_range != etag:
            return None
        start = int(requested[len("bytes=") : -1])
        return start if start < size else None

    def _endless(self, name: str, data: bytes) -> None:
        self.server.log(Request(name, self.headers.get("Range"), None, 200))
        self.send_response(200)
        self.end_headers()
        try:
            self.wfile.write(data)
            for _ in range(4096):  # ends by itself after 256 MiB; the client hangs up long before
                self.wfile.write(b"\0" * 65536)
        except OSError:
            return

    def _drip(self, name: str, data: bytes, etag: str, chunk: int, pause: float) -> None:
        self.server.log(Request(name, self.headers.get("Range"), None, 200))
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", etag)
        self.end_headers()
        try:
            for offset in range(0, len(data), chunk):
                self.wfile.write(data[offset : offset + chunk])
                self.wfile.flush()
                time.sleep(pause)
        except OSError:
            return


_Server = TypeVar("_Server", bound=ThreadingHTTPServer)


@contextmanager
def serving(server: _Server, name: str) -> Iterator[_Server]:
    """Run `server` in a daemon thread for the `with` block, then shut it down and close it."""
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name=name, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()

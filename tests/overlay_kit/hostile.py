"""A raw TCP server on 127.0.0.1 that answers every request with scripted bytes, as slowly as
asked: headers dripped one byte at a time, compressed bombs, escape sequences in the status
line. It records each request head, and its sender threads stop when it is closed."""

from __future__ import annotations

import functools
import socket
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import zstandard


@dataclass
class Script:
    """What to send: `head` (status line and headers), then `body`; `step` bytes at a time
    with `pause` seconds between steps (0: all at once); `endless` repeats `body` forever."""

    head: bytes
    body: bytes = b""
    step: int = 0
    pause: float = 0.0
    endless: bool = False

    def chunks(self) -> Iterator[bytes]:
        data = self.head + self.body
        size = self.step or len(data) or 1
        yield from (data[at : at + size] for at in range(0, len(data), size))
        while self.endless:
            yield self.body


def answer(
    status: str,
    headers: dict[str, str],
    body: bytes = b"",
    *,
    step: int = 0,
    pause: float = 0.0,
    endless: bool = False,
) -> Script:
    """A `Script` for `HTTP/1.1 <status>` with these headers (Content-Length added)."""
    lines = [f"HTTP/1.1 {status}", *(f"{key}: {value}" for key, value in headers.items())]
    if "Content-Length" not in headers and not endless:
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return Script(head, body, step=step, pause=pause, endless=endless)


@dataclass
class HostileServer:
    """Serves `script` to every connection until `close`."""

    script: Script
    heads: list[bytes] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.1)
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}/"

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._socket.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            head = b""
            while b"\r\n\r\n" not in head:
                data = connection.recv(4096)
                if not data:
                    return
                head += data
            self.heads.append(head)
            try:
                for chunk in self.script.chunks():
                    if self._stop.wait(self.script.pause):
                        return
                    connection.sendall(chunk)
            except OSError:  # the client hung up: what it should do with a hostile answer
                return


@functools.cache
def gzip_bomb(decoded: int) -> bytes:
    """A gzip stream of `decoded` zero bytes (about 1/1000 of that in size)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    parts = [compressor.compress(block) for _ in range(decoded >> 20)]
    return b"".join(parts) + compressor.flush()


@functools.cache
def zstd_bomb(decoded: int) -> bytes:
    """A zstd frame of `decoded` zero bytes (a few KiB per GiB)."""
    compressor = zstandard.ZstdCompressor(level=3).compressobj()
    block = bytes(1 << 20)
    parts = [compressor.compress(block) for _ in range(decoded >> 20)]
    return b"".join(parts) + compressor.flush()

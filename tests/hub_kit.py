"""A Hugging Face style hub on loopback: the resolve endpoint answers HEAD and GET with a 302 to
a CDN (another host name and port) and the file's sha256 and size in `X-Linked-Etag` and
`X-Linked-Size`, as the real hub does for LFS files."""

from __future__ import annotations

import re
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from llamaship_contract.models import CatalogueEntry
from models_kit import ModelServer
from overlay_kit.server import serving

REPO = "publisher/tiny-GGUF"
_RESOLVE = re.compile(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)")


def hub_file_url(file_name: str, repo: str = REPO) -> str:
    """The canonical hub URL of `file_name` (what a catalogue names)."""
    return f"https://huggingface.co/{repo}/resolve/main/{file_name}"


@dataclass
class Published:
    """What the hub answers for one file: None leaves the header out."""

    sha256: str | None
    size: int | None


class HubServer(ThreadingHTTPServer):
    """The hub's resolve endpoint on 127.0.0.1, redirecting to `cdn_url`."""

    daemon_threads = True

    def __init__(self, cdn_url: str) -> None:
        super().__init__(("127.0.0.1", 0), _HubHandler)
        self.cdn_url = cdn_url
        self.published: dict[str, Published] = {}
        self.heads: list[str] = []
        self.gets: list[str] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def publish(self, file_name: str, sha256: str | None, size: int | None) -> None:
        self.published[file_name] = Published(sha256, size)

    def seen(self, method: str, path: str) -> None:
        with self._lock:
            (self.heads if method == "HEAD" else self.gets).append(path)


class _HubHandler(BaseHTTPRequestHandler):
    server: HubServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read `heads` and `gets`."""

    def _answer(self) -> None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        self.server.seen(self.command, path)
        match = _RESOLVE.fullmatch(path)
        published = None if match is None else self.server.published.get(match[3])
        if match is None or published is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(302)
        self.send_header("Location", self.server.cdn_url + match[3])
        if published.sha256 is not None:
            self.send_header("X-Linked-Etag", f'"{published.sha256}"')
        if published.size is not None:
            self.send_header("X-Linked-Size", str(published.size))
        self.send_header("X-Repo-Commit", "0" * 40)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = _answer
    do_GET = _answer


@dataclass(frozen=True)
class LoopbackHub:
    """The hub (127.0.0.1) and its CDN (`localhost`, another port) serving `root`."""

    hub: HubServer
    cdn: ModelServer
    root: Path


@contextmanager
def loopback_hub(root: Path) -> Iterator[LoopbackHub]:
    """Serve `root` from a CDN on `localhost` behind a hub on 127.0.0.1."""
    with serving(ModelServer(root), "cdn") as cdn:
        cdn_url = cdn.url.replace("127.0.0.1", "localhost")
        with serving(HubServer(cdn_url), "hub") as hub:
            yield LoopbackHub(hub, cdn, root)


def hub_entry(name: str, file_name: str, **fields: Any) -> CatalogueEntry:
    """A chat model the hub vouches for (`hash_from: hub`); `fields` override."""
    values: dict[str, Any] = {
        "name": name,
        "file_name": file_name,
        "url": hub_file_url(file_name),
        "size": None,
        "sha256": None,
        "license": "MIT",
        "purpose": "chat",
        "context_length": 2048,
        "min_ram_mb": 64,
        "hash_from": "hub",
        **fields,
    }
    return CatalogueEntry(**values)

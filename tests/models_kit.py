"""Shared by the model tests: the gemma GGUF served over loopback and a catalogue that names it."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from llamaship.io.http_session import DownloadLimits
from llamaship_contract.models import CatalogueEntry, ModelCatalogue
from overlay_kit.server import OverlayServer, _Handler

GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"
# Fast failure: one attempt, no pause between attempts.
ONE_TRY = DownloadLimits(max_attempts=1, retry_pause_s=0.0)


class _HeadHandler(_Handler):
    """The overlay server's handler plus HEAD (what a pull of a URL without a size asks)."""

    server: ModelServer

    def do_HEAD(self) -> None:
        name = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        path = self.server.root / name
        if self.server.next_fault(name) == "missing" or not path.is_file():
            self._send(404, {"Content-Length": "0"}, b"", name)
            return
        self.server.log_head(name)
        self.send_response(200)
        self.send_header("Content-Length", str(path.stat().st_size))
        self.end_headers()


class ModelServer(OverlayServer):
    """The fault-injecting overlay server, serving GGUF files, with HEAD."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.RequestHandlerClass = _HeadHandler
        self.heads: list[str] = []

    def log_head(self, name: str) -> None:
        self.heads.append(name)


@dataclass(frozen=True)
class Gemma:
    """The real gemma GGUF published as `www/<GEMMA_FILE>`."""

    path: Path
    size: int
    sha256: str

    def entry(
        self,
        server_url: str,
        name: str = "gemma3-270m",
        *,
        file: str = GEMMA_FILE,
        sha256: str | None = "",
        unverified: bool = False,
    ) -> CatalogueEntry:
        """A catalogue entry for the served `file`, installed as `<name>.gguf` (gemma3-270m:
        as GEMMA_FILE); `sha256=None`: unknown (pass `unverified`), "": the right one."""
        return CatalogueEntry(
            name=name,
            file_name=GEMMA_FILE if name == "gemma3-270m" else f"{name}.gguf",
            url=server_url + file,
            size=None if sha256 is None else self.size,
            sha256=None if sha256 is None else (sha256 or self.sha256),
            license="Gemma",
            purpose="chat",
            context_length=32768,
            min_ram_mb=512,
            unverified=unverified,
        )

    def catalogue(self, server_url: str) -> ModelCatalogue:
        """gemma3-270m (pinned), gemma-unverified (no hash), gemma-wrong-hash, gemma-missing."""
        return ModelCatalogue(
            models=(
                self.entry(server_url),
                self.entry(server_url, "gemma-unverified", sha256=None, unverified=True),
                self.entry(server_url, "gemma-wrong-hash", sha256="0" * 64),
                self.entry(server_url, "gemma-missing", file="missing.gguf"),
            )
        )


def files_under(directory: Path) -> list[str]:
    """Every file below `directory` (relative), to prove nothing was left behind."""
    if not directory.exists():
        return []
    return sorted(
        str(path.relative_to(directory)) for path in directory.rglob("*") if not path.is_dir()
    )

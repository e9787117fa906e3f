"""What every fetch shares: its errors, its progress callback and what a fetched archive is."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llamaship_contract.errors import LlamashipError
from llamaship_contract.names import ExitStatus

ProgressFn = Callable[[int, int], None]
"""Called with (bytes done, bytes total) as a file arrives."""


class DownloadError(LlamashipError):
    """A file could not be fetched (network, server or size problem)."""

    exit_code = ExitStatus.DOWNLOAD


class DownloadIncomplete(DownloadError):
    """Every attempt broke off; the partial file is kept so a later install resumes it."""


class IntegrityError(DownloadError):
    """A fetched file does not match its signed size or sha256."""

    exit_code = ExitStatus.INTEGRITY


@dataclass(frozen=True)
class FetchedFile:
    """A verified archive; `owned` is True when it is a download this install may delete."""

    path: Path
    owned: bool
    sha256: str | None = None  # the content's sha256, when it was computed or checked

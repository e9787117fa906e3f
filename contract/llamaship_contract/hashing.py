"""File hashing shared by the build side (writing manifests) and the runtime (verifying)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

ProgressFn = Callable[[int, int], None]
"""Called with (bytes done, bytes total) while a file is read."""

CHUNK = 256 * 1024


def sha256_of(path: Path, progress: ProgressFn | None = None, total: int = 0) -> str:
    """The hex sha256 of the file at `path`, reporting progress per chunk if asked."""
    digest = hashlib.sha256()
    done = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    return digest.hexdigest()

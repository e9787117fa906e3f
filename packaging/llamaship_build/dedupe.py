"""Replace byte-identical copies of a file in a bundle with relative symbolic links.

Wheels cannot hold links, so llama-cpp-python and friends store each shared library under
several names; PyInstaller copies them all. One real file and links keep every name valid.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from pathlib import Path


def link_duplicates(root: Path, min_size: int = 64 * 1024) -> int:
    """Link duplicates of files >= `min_size` to one kept copy; returns bytes saved."""
    by_digest: dict[tuple[int, str], list[Path]] = defaultdict(list)
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink() and path.stat().st_size >= min_size:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            by_digest[(path.stat().st_size, digest)].append(path)
    saved = 0
    for (size, _), paths in by_digest.items():
        # Keep the copy with the shortest path (usually the soname, closest to the root).
        keep, *copies = sorted(paths, key=lambda path: (len(path.parts), len(path.name), path))
        for copy in copies:
            copy.unlink()
            copy.symlink_to(os.path.relpath(keep, copy.parent))
            saved += size
    return saved

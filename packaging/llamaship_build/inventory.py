"""Sizes of a bundle: file count, total bytes, the largest components."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Inventory:
    """File sizes of a directory tree (links counted as zero bytes)."""

    sizes: dict[str, int]

    @property
    def file_count(self) -> int:
        return len(self.sizes)

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes.values())

    def largest_components(self, count: int) -> list[tuple[str, int]]:
        """Top-level packages/libraries of the bundle by size (under `_internal/` if present)."""
        totals: Counter[str] = Counter()
        for relative, size in self.sizes.items():
            parts = relative.split("/")
            depth = 2 if parts[0] == "_internal" and len(parts) >= 2 else 1
            totals["/".join(parts[:depth])] += size
        return sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:count]


def inventory(root: Path) -> Inventory:
    return Inventory(
        {
            path.relative_to(root).as_posix(): 0 if path.is_symlink() else path.stat().st_size
            for path in root.rglob("*")
            if path.is_file() or path.is_symlink()
        }
    )

"""What every overlay fault test ends by asserting."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from llamaship.overlay.store import OverlayStore
from llamaship.paths import DataDirs


def files_outside(root: Path, home: Path) -> set[str]:
    """Every path under `root` that is not under `home` (to prove nothing leaked out)."""
    return {str(path) for path in root.rglob("*") if not path.is_relative_to(home)}


def assert_settled(dirs: DataDirs, active_version: str | None) -> None:
    """The expected overlay (None: CPU) is active and nothing half-installed is left."""
    store = OverlayStore(dirs)
    active = store.active()
    assert (active.overlay_version if active else None) == active_version
    leftovers = sorted(
        path.name
        for path in dirs.overlays.glob(".*")
        if path.name.startswith((".staging-", ".trash-"))
    )
    assert leftovers == [], f"half-installed leftovers: {leftovers}"
    referenced: set[str] = set()
    for overlay in (active, store.previous()):
        if overlay is not None:
            referenced.update(overlay.layers.values())
    layers_dir = dirs.overlays / "layers"
    present = {path.name for path in layers_dir.iterdir()} if layers_dir.is_dir() else set()
    assert present <= referenced, f"layers nothing refers to: {sorted(present - referenced)}"
    downloads = sorted(
        path.name
        for path in dirs.downloads.glob("*")
        if not path.name.endswith((".part", ".part.meta"))
    )
    assert downloads == [], f"finished downloads left behind: {downloads}"


@contextlib.contextmanager
def nothing_written_outside(root: Path, home: Path) -> Iterator[None]:
    """Fail if the block creates anything under `root` outside the data dir `home`."""
    before = files_outside(root, home)
    yield
    assert files_outside(root, home) == before, "files were written outside the data dir"

"""Two builds of the committed HEAD, from `git archive` exports at paths of different lengths,
give byte-identical bundle archives, overlay layers, manifests and checksums.

These are `nox -s repro`'s bundle and layer steps on one compiled wheel (the wheelhouse's); the
compile's own reproducibility is `nox -s repro -- --compile`, two 15-minute compiles, run by
hand (docs/platforms.md). Uncommitted changes are not in the exports: commit first.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llamaship_build.project import Project
from llamaship_build.repro import ARCHIVE_SUFFIXES, build_twice

pytestmark = [pytest.mark.slow, pytest.mark.bundle, pytest.mark.root]


def test_two_builds_of_head_give_identical_bundle_archives_and_overlay_layers(
    cuda_wheel: Path, tmp_path: Path
) -> None:
    steps = [
        ["bundle", "--force"],
        ["overlay", "--unsigned", "--source", "wheel", str(cuda_wheel)],
    ]
    assert build_twice(Project.here().root, tmp_path, steps) == []
    first = tmp_path / "a" / "src" / "dist"
    archives = sorted(
        path.relative_to(first).as_posix()
        for path in first.rglob("*")
        if path.name.endswith(ARCHIVE_SUFFIXES)
    )
    # What was compared: the bundle archive and both layers (names carry version and cu tag).
    assert [name.split("-")[0] for name in archives] == ["backend", "overlay/cuda", "overlay/llama"]
    assert (first / "bundle-manifest.json").is_file()

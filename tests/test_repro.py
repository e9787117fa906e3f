"""Two builds of the committed HEAD, from `git archive` exports at paths of different lengths,
give byte-identical bundle archives, overlay layers, manifests and checksums.

These are `nox -s repro`'s bundle and layer steps on one compiled wheel (the wheelhouse's); the
compile's own reproducibility is `nox -s repro -- --compile`, two compiles of about 15 minutes
each, run by hand (docs/releasing.md). Uncommitted changes are not in the exports: commit first.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llamaship_build.project import Project
from llamaship_build.repro import ARCHIVE_SUFFIXES, build_twice

pytestmark = [pytest.mark.slow, pytest.mark.root]


def _archives(dist: Path) -> list[str]:
    return sorted(
        path.relative_to(dist).as_posix()
        for path in [*dist.glob("*"), *dist.glob("overlay/*")]
        if path.name.endswith(ARCHIVE_SUFFIXES)
    )


@pytest.mark.bundle
def test_two_builds_of_head_give_identical_bundle_archives(tmp_path: Path) -> None:
    assert build_twice(Project.here().root, tmp_path, [["bundle", "--force"]]) == []
    first = tmp_path / "a" / "src" / "dist"
    assert [name.split("-")[0] for name in _archives(first)] == ["backend"]
    assert (first / "bundle-manifest.json").is_file()


def test_two_builds_of_head_give_identical_overlay_layers(cuda_wheel: Path, tmp_path: Path) -> None:
    step = ["overlay", "--unsigned", "--source", "wheel", str(cuda_wheel)]
    assert build_twice(Project.here().root, tmp_path, [step]) == []
    layers = _archives(tmp_path / "a" / "src" / "dist")
    assert [name.split("-")[0] for name in layers] == ["overlay/cuda", "overlay/llama"]

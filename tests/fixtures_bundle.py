"""The real PyInstaller bundle, built once per session (and cached across runs by input hash)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llamaship_build.bundle import build_bundle
from llamaship_build.project import Project


@pytest.fixture(scope="session")
def bundle_manifest() -> dict[str, Any]:
    """Build (or reuse) dist/backend with the same code path as `nox -s bundle`."""
    manifest_path = build_bundle(Project.here())
    manifest: dict[str, Any] = json.loads(manifest_path.read_text())
    return manifest


@pytest.fixture(scope="session")
def bundle_executable(bundle_manifest: dict[str, Any]) -> Path:
    executable = Project.here().dist / "backend" / "backend"
    assert executable.is_file()
    return executable


@pytest.fixture(scope="session")
def dist_dir(bundle_manifest: dict[str, Any]) -> Path:
    return Project.here().dist


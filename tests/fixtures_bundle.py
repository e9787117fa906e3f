"""The real PyInstaller bundle for tests, built once per session (and cached across runs by
input hash).

It is built by the release code path with one more build input: the tests' release key
(`signing_keys`), baked into its trusted_keys.json like the release keys. So the frozen
`backend` accepts the overlays the tests sign, while the shipped code has no way to add a key
at run time. It goes to build/test-bundle/, never to dist/ (where `nox -s bundle` puts the
release bundle, which trusts only runtime/llamaship/trusted_keys.json).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fixtures_overlay import KeyPair
from llamaship_build.bundle import build_bundle
from llamaship_build.project import Project


def bundle_dist_for_tests() -> Path:
    """Where the tests' bundle is built: beside the release dist/, never in it."""
    return Project.here().build_dir / "test-bundle"


@pytest.fixture(scope="session")
def bundle_manifest(signing_keys: KeyPair) -> dict[str, Any]:
    """Build (or reuse) the test bundle with the same code path as `nox -s bundle`."""
    manifest_path = build_bundle(
        Project.here(), extra_trusted_keys=(signing_keys.public,), dist=bundle_dist_for_tests()
    )
    manifest: dict[str, Any] = json.loads(manifest_path.read_text())
    return manifest


@pytest.fixture(scope="session")
def bundle_executable(bundle_manifest: dict[str, Any]) -> Path:
    executable = bundle_dist_for_tests() / "backend" / "backend"
    assert executable.is_file()
    return executable


@pytest.fixture(scope="session")
def dist_dir(bundle_manifest: dict[str, Any]) -> Path:
    return bundle_dist_for_tests()

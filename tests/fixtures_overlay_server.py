"""Pytest fixtures of the overlay install tests: signing keys, a release factory, an empty
data dir and the fault-injecting HTTP server (helpers live in the `overlay_kit` package)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llamaship.paths import DataDirs
from llamaship_contract.signing import generate_keypair
from overlay_kit.probe import install_release
from overlay_kit.releases import Keys, ReleaseFactory, ReleaseSpec
from overlay_kit.server import OverlayServer, serving


@pytest.fixture(scope="session")
def release_keys() -> Keys:
    """The key pair the test releases are signed with (trusted by the tests' installers)."""
    return Keys(*generate_keypair())


@pytest.fixture(scope="session")
def stranger_keys() -> Keys:
    """A valid key pair nobody trusts."""
    return Keys(*generate_keypair())


@pytest.fixture
def releases(tmp_path: Path, release_keys: Keys) -> ReleaseFactory:
    return ReleaseFactory(tmp_path / "scratch", release_keys)


@pytest.fixture
def data_dirs(tmp_path: Path) -> DataDirs:
    """An empty LLAMASHIP_HOME for one test."""
    return DataDirs(tmp_path / "home")


@pytest.fixture
def v1_active(
    tmp_path: Path, releases: ReleaseFactory, release_keys: Keys, data_dirs: DataDirs
) -> DataDirs:
    """`data_dirs` with the default test release (0.3.36-cu13.0-1, serial 1) active."""
    index = releases.publish(tmp_path / "v1-release", ReleaseSpec())
    install_release(data_dirs, str(index), release_keys)
    return data_dirs


@pytest.fixture
def overlay_server(tmp_path: Path) -> Iterator[OverlayServer]:
    """An HTTP server on 127.0.0.1 serving `tmp_path / "www"`, with fault injection."""
    root = tmp_path / "www"
    root.mkdir()
    with serving(OverlayServer(root), "overlay-server") as server:
        yield server

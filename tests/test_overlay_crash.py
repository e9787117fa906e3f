"""An installer killed (SIGKILL) at each step, two installers at once, and a crashing probe.

The killed installer runs in a child process (`overlay_kit/child.py`) that pauses at a named
step through the installer's observer (`llamaship.overlay.checkpoints`). The next start
cleans up; the previous overlay must still be active, nothing half-installed, nothing written
outside the data dir; a new install works.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from hardware.fake_cuda import compile_crashing_module
from llamaship.overlay.checkpoints import STEPS, Step
from llamaship.overlay.install import Installer, ProbeRejected, QuarantinedRelease
from llamaship.overlay.store import InstallBusy, OverlayStore
from llamaship.paths import DataDirs
from overlay_kit.checks import assert_settled, nothing_written_outside
from overlay_kit.child import start_installer
from overlay_kit.probe import install_release
from overlay_kit.releases import (
    FAST_OPTIONS,
    TARGET,
    Keys,
    ReleaseFactory,
    ReleaseSpec,
    llama_files,
    runtime_files,
)
from overlay_kit.server import OverlayServer

V1 = ReleaseSpec(overlay_version="0.3.36-cu13.0-1", serial=1)
# A 2 MiB runtime layer, so that the pause after the first chunk is truly mid-download.
V2 = ReleaseSpec(
    overlay_version="0.3.36-cu13.0-2", serial=2, runtime=runtime_files("v2", size=1024 * 1024)
)
RUNTIME_ARCHIVE = f"cuda-runtime-{V2.overlay_version}-linux_x86_64.tar.zst"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def reached() -> list[Step]:
    """The steps the installer reaches in this process, as its observer sees them."""
    return []


def test_checkpoints_are_reached_in_install_order(
    v1_active: DataDirs,
    releases: ReleaseFactory,
    release_keys: Keys,
    overlay_server: OverlayServer,
    reached: list[Step],
) -> None:
    releases.publish(overlay_server.root, V2)
    install_release(v1_active, overlay_server.url + "releases.json", release_keys, reached.append)
    assert reached == [
        "index",
        "download",
        "download",
        "extract",
        "extract",
        "renamed",
        "probed",
        "switch",
    ]
    assert list(dict.fromkeys(reached)) == list(STEPS)


def test_shipped_code_has_no_test_switch() -> None:
    """Tests pause the installer through its `observer`; no environment variable can."""
    shipped = [
        path
        for folder in ("contract", "runtime", "backend")
        for path in (REPO / folder).rglob("*.py")
    ]
    assert len(shipped) > 20
    assert [str(path) for path in shipped if "LLAMASHIP_TEST" in path.read_text("utf-8")] == []


@pytest.mark.parametrize("step", STEPS)
def test_sigkill_at_each_step_leaves_the_previous_overlay_active(
    v1_active: DataDirs,
    releases: ReleaseFactory,
    release_keys: Keys,
    tmp_path: Path,
    overlay_server: OverlayServer,
    step: str,
) -> None:
    releases.publish(overlay_server.root, V2)
    index_url = overlay_server.url + "releases.json"

    with nothing_written_outside(tmp_path, v1_active.home):
        child = start_installer(v1_active.home, index_url, [release_keys.public], pause_at=step)
        child.wait_paused(step)
        child.kill()
        removed = OverlayStore(v1_active).cleanup_leftovers()
        assert_settled(v1_active, V1.overlay_version)

    if step in ("extract", "renamed", "probed"):
        assert removed, "the killed install left something that the next start removed"
    overlay_server.requests.clear()
    install_release(v1_active, index_url, release_keys)
    assert_settled(v1_active, V2.overlay_version)
    if step == "download":  # the partial download survived and was resumed
        (resumed, *_) = overlay_server.requested(RUNTIME_ARCHIVE)
        assert resumed.range is not None and resumed.status == 206


def test_second_installer_fails_fast_while_one_runs(
    v1_active: DataDirs, releases: ReleaseFactory, release_keys: Keys, tmp_path: Path
) -> None:
    index = releases.publish(tmp_path / "v2-release", V2)
    child = start_installer(v1_active.home, str(index), [release_keys.public], pause_at="extract")
    child.wait_paused("extract")
    try:
        staging = list(v1_active.overlays.glob(".staging-*"))
        assert len(staging) == 1
        assert OverlayStore(v1_active).cleanup_leftovers() == []
        assert staging[0].is_dir(), "a launch must not clean up under a running install"
        with pytest.raises(InstallBusy, match="another overlay install is running"):
            install_release(v1_active, str(index), release_keys)
    finally:
        child.kill()
    OverlayStore(v1_active).cleanup_leftovers()
    assert_settled(v1_active, V1.overlay_version)


def test_probe_that_crashes_quarantines_the_overlay(
    v1_active: DataDirs, releases: ReleaseFactory, release_keys: Keys, tmp_path: Path
) -> None:
    """The real probe (`llamaship.launch.probe.run_probe`, a `llamaship probe` child process) meets
    an overlay whose backend module kills its process with SIGSEGV when ggml loads it."""
    module = compile_crashing_module(tmp_path / "module" / "libggml-cuda.so")
    # No stand-in libraries: activation would refuse them (not ELF) before the module loads.
    spec = dataclasses.replace(
        V2,
        runtime={"lib/README.txt": b"no libraries to preload"},
        llama=llama_files(V2.overlay_version, module.read_bytes()),
    )
    index = releases.publish(tmp_path / "v2-release", spec)
    installer = Installer(v1_active, [release_keys.public], options=FAST_OPTIONS)

    with (
        nothing_written_outside(tmp_path, v1_active.home),
        pytest.raises(ProbeRejected, match=r"probe crashed \(SIGSEGV\)"),
    ):
        installer.install(str(index), TARGET)

    assert_settled(v1_active, V1.overlay_version)
    reason = OverlayStore(v1_active).quarantine_reason(V2.overlay_version)
    assert reason is not None and "SIGSEGV" in reason
    with pytest.raises(QuarantinedRelease, match=r"is quarantined .*install it explicitly"):
        installer.install(str(index), TARGET, skip_quarantined=True)
    assert_settled(v1_active, V1.overlay_version)

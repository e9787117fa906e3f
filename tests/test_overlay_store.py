"""The installed overlay store: broken state files never raise, leftovers are cleaned up."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest

from llamaship.overlay.installed import AcceptedSerials
from llamaship.overlay.store import PARTIAL_DOWNLOAD_MAX_AGE_S, OverlayStore, StoreError
from llamaship.paths import DataDirs
from overlay_kit.checks import assert_settled
from overlay_kit.probe import install_release
from overlay_kit.releases import Keys, ReleaseFactory, ReleaseSpec

V1 = ReleaseSpec(overlay_version="0.3.36-cu13.0-1", serial=1)
V2 = ReleaseSpec(overlay_version="0.3.36-cu13.0-2", serial=2)


def _pointer(dirs: DataDirs) -> dict[str, object]:
    data: dict[str, object] = json.loads((dirs.overlays / "active.json").read_text())
    return data


BROKEN_POINTERS = {
    "not-json": (b'{"schema": 1, "overlay_vers', "Invalid JSON"),
    "empty": (b"", "Invalid JSON"),
    "binary": (bytes(range(256)), "Invalid JSON"),
    "a-list": (b"[]", "Input should be an object"),
    "future-schema": (b'{"schema": 2}', "schema: Input should be 1 (got 2)"),
}


@pytest.mark.parametrize(
    ("content", "reason"), BROKEN_POINTERS.values(), ids=BROKEN_POINTERS.keys()
)
def test_broken_active_pointer_reads_as_cpu_and_says_why(
    v1_active: DataDirs, caplog: pytest.LogCaptureFixture, content: bytes, reason: str
) -> None:
    (v1_active.overlays / "active.json").write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="llamaship.overlay.store"):
        assert OverlayStore(v1_active).active() is None
    assert reason in caplog.text and "active.json" in caplog.text


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            lambda p: p["layers"].update({"llama-cuda": "llama-cuda-../../x"}),
            "layers.llama-cuda: must be a layer id",
        ),
        (
            lambda p: p["layers"].update({"cuda-runtime": "llama-cuda-0000000000000000"}),
            "layers.cuda-runtime: 'llama-cuda-0000000000000000' is not a cuda-runtime layer id",
        ),
        (lambda p: p.update(serial="7"), "serial: Input should be a valid integer"),
        (
            lambda p: p.update(requirements={"cuda_version": "13.0"}),
            "requirements.overlay_version: Field required",
        ),
        (
            lambda p: p["requirements"].update(cuda_archs="75"),
            "requirements.cuda_archs: Input should be a valid array",
        ),
        (lambda p: p["layers"].update({"llama-cuda": "llama-cuda-0000000000000000"}), "is missing"),
    ],
    ids=[
        "escaping-id",
        "foreign-id",
        "serial-type",
        "requirements-fields",
        "archs-type",
        "missing-layer-dir",
    ],
)
def test_inconsistent_active_pointer_reads_as_cpu(
    v1_active: DataDirs, caplog: pytest.LogCaptureFixture, change: object, reason: str
) -> None:
    pointer = _pointer(v1_active)
    change(pointer)  # type: ignore[operator]
    (v1_active.overlays / "active.json").write_text(json.dumps(pointer))
    with caplog.at_level(logging.WARNING, logger="llamaship.overlay.store"):
        assert OverlayStore(v1_active).active() is None
    assert reason in caplog.text


def test_install_over_a_corrupt_active_pointer_works(
    v1_active: DataDirs, releases: ReleaseFactory, release_keys: Keys, tmp_path: Path
) -> None:
    (v1_active.overlays / "active.json").write_bytes(b"\x00garbage")
    index = releases.publish(tmp_path / "v2-release", V2)

    install_release(v1_active, str(index), release_keys)

    assert OverlayStore(v1_active).previous() is None, "a corrupt pointer is not kept as previous"
    assert_settled(v1_active, V2.overlay_version)


def test_corrupt_previous_pointer_means_nothing_to_roll_back(v1_active: DataDirs) -> None:
    (v1_active.overlays / "previous.json").write_text("{not json")
    store = OverlayStore(v1_active)
    with pytest.raises(StoreError, match="no previous overlay to roll back to"):
        store.rollback()
    assert_settled(v1_active, V1.overlay_version)


def test_corrupt_quarantine_file_reads_empty_and_is_rewritten(
    v1_active: DataDirs, caplog: pytest.LogCaptureFixture
) -> None:
    path = v1_active.overlays / "quarantine.json"
    path.write_text('{"schema": 1, "overlays": {"0.3.36-cu13.0-1": 42}}')
    store = OverlayStore(v1_active)
    with caplog.at_level(logging.WARNING, logger="llamaship.overlay.store"):
        assert store.quarantine_reason(V1.overlay_version) is None
    assert "overlays.0.3.36-cu13.0-1: Input should be a valid string (got 42)" in caplog.text

    store.quarantine(V1.overlay_version, "boot crashed twice")

    assert json.loads(path.read_text()) == {
        "schema": 1,
        "overlays": {V1.overlay_version: "boot crashed twice"},
    }
    store.release_quarantine(V1.overlay_version)
    assert store.quarantined() == {}


def test_corrupt_accepted_serials_read_as_none_accepted(
    v1_active: DataDirs, caplog: pytest.LogCaptureFixture
) -> None:
    store = OverlayStore(v1_active)
    assert store.accepted_serials() == AcceptedSerials(index=1, manifest=1)
    (v1_active.state / "accepted_serial.json").write_text('{"schema": 1, "index_serial": "9"}')
    with caplog.at_level(logging.WARNING, logger="llamaship.overlay.store"):
        assert store.accepted_serials() == AcceptedSerials()
    assert "accepted_serial.json" in caplog.text

    store.accept_serials(index=3, manifest=2)
    store.accept_serials(index=1, manifest=1)
    assert store.accepted_serials() == AcceptedSerials(index=3, manifest=2)


def test_cleanup_removes_what_a_crash_leaves_and_keeps_fresh_partial_downloads(
    v1_active: DataDirs,
) -> None:
    overlays, downloads = v1_active.overlays, v1_active.downloads
    (overlays / ".staging-0123" / "llama_cpp").mkdir(parents=True)
    (overlays / ".trash-llama-cuda-1-ab" / "lib").mkdir(parents=True)
    (overlays / "layers" / "llama-cuda-0000000000000000" / "llama_cpp").mkdir(parents=True)
    (overlays / ".active.json.x1y2.tmp").write_text('{"half": ')
    (v1_active.state / ".accepted_serial.json.x1y2.tmp").write_text("{")
    (overlays / "notes.tmp").write_text("not ours")
    downloads.mkdir(parents=True, exist_ok=True)
    for name in (
        "fresh.tar.zst.part",
        "fresh.tar.zst.part.meta",
        "old.tar.zst.part",
        "done.tar.zst",
    ):
        (downloads / name).write_bytes(b"x")
    long_ago = time.time() - PARTIAL_DOWNLOAD_MAX_AGE_S - 60
    os.utime(downloads / "old.tar.zst.part", (long_ago, long_ago))

    removed = OverlayStore(v1_active).cleanup_leftovers()

    assert len(removed) == 7
    assert sorted(path.name for path in downloads.iterdir()) == [
        "fresh.tar.zst.part",
        "fresh.tar.zst.part.meta",
    ]
    assert (overlays / "notes.tmp").exists()
    assert not (v1_active.state / ".accepted_serial.json.x1y2.tmp").exists()
    assert_settled(v1_active, V1.overlay_version)

"""Network, signature and release faults during an overlay upgrade over loopback HTTP.

Each test starts with overlay V1 installed and active, tries to upgrade to V2 from a
misbehaving server or a bad release, and ends asserting that V1 is still active, nothing is
half-installed, nothing was written outside the data dir, and the error says what happened.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llamaship.io.transfer import DownloadError, DownloadIncomplete, IntegrityError
from llamaship.overlay.install import Installer, InstallResult
from llamaship.overlay.select import (
    IncompatibleOverlay,
    NoMatchingOverlay,
    ReplayedRelease,
    Target,
)
from llamaship.paths import DataDirs
from llamaship_contract.errors import LlamashipError
from llamaship_contract.signing import SignatureError, sign
from overlay_kit.checks import assert_settled, nothing_written_outside
from overlay_kit.probe import layer_probe
from overlay_kit.releases import (
    FAST_OPTIONS,
    GPU_REPORT,
    TARGET,
    Keys,
    ReleaseFactory,
    ReleaseSpec,
    rewrite_list,
    runtime_files,
)
from overlay_kit.server import OverlayServer

V1 = ReleaseSpec(overlay_version="0.3.36-cu13.0-1", serial=1)
V2 = ReleaseSpec(overlay_version="0.3.36-cu13.0-2", serial=2, runtime=runtime_files("v2"))
INDEX = "releases.json"


def published(layer: str, spec: ReleaseSpec = V2, suffix: str = ".tar.zst") -> str:
    return f"{layer}-{spec.overlay_version}-{spec.platform}{suffix}"


LLAMA_ARCHIVE = published("llama-cuda")
LLAMA_MANIFEST = published("llama-cuda", suffix=".json")


@dataclass
class Upgrade:
    """V1 is installed; `run` upgrades from the server, `fails` expects a clean failure."""

    tmp_path: Path
    dirs: DataDirs
    server: OverlayServer
    releases: ReleaseFactory
    keys: Keys

    def run(self, target: Target = TARGET) -> InstallResult:
        installer = Installer(
            self.dirs, [self.keys.public], probe=layer_probe, options=FAST_OPTIONS
        )
        return installer.install(self.server.url + INDEX, target)

    def fails(
        self, error_type: type[LlamashipError], message: str, target: Target = TARGET
    ) -> LlamashipError:
        with (
            nothing_written_outside(self.tmp_path, self.dirs.home),
            pytest.raises(error_type, match=message) as caught,
        ):
            self.run(target)
        assert_settled(self.dirs, V1.overlay_version)
        return caught.value

    def publish(self, *specs: ReleaseSpec, serial: int | None = None) -> Path:
        return self.releases.publish(self.server.root, *specs, serial=serial)


@pytest.fixture
def upgrade(
    tmp_path: Path,
    overlay_server: OverlayServer,
    releases: ReleaseFactory,
    release_keys: Keys,
    data_dirs: DataDirs,
) -> Upgrade:
    index = releases.publish(tmp_path / "v1-release", V1)
    Installer(data_dirs, [release_keys.public], probe=layer_probe, options=FAST_OPTIONS).install(
        str(index), TARGET
    )
    return Upgrade(tmp_path, data_dirs, overlay_server, releases, release_keys)


@pytest.fixture
def upgrade_to_v2(upgrade: Upgrade) -> Upgrade:
    upgrade.publish(V2)
    return upgrade


def parts(dirs: DataDirs) -> list[str]:
    return sorted(path.name for path in dirs.downloads.iterdir())


# -- download faults -----------------------------------------------------------------------


def test_bit_flip_in_an_archive_is_refused_and_the_download_deleted(upgrade_to_v2: Upgrade) -> None:
    upgrade_to_v2.server.inject(LLAMA_ARCHIVE, "flip", forever=True)
    upgrade_to_v2.fails(IntegrityError, "corrupted or was tampered with: its sha256 is")
    assert parts(upgrade_to_v2.dirs) == []


def test_truncated_download_resumes_with_range_and_if_range(upgrade_to_v2: Upgrade) -> None:
    upgrade_to_v2.server.inject(LLAMA_ARCHIVE, "truncate")

    result = upgrade_to_v2.run()

    assert result.overlay.overlay_version == V2.overlay_version
    first, second = upgrade_to_v2.server.requested(LLAMA_ARCHIVE)
    size = (upgrade_to_v2.server.root / LLAMA_ARCHIVE).stat().st_size
    assert (first.range, first.status) == (None, 200)
    assert (second.range, second.status) == (f"bytes={size // 2}-", 206)
    assert second.if_range is not None and second.if_range.startswith('"')
    assert_settled(upgrade_to_v2.dirs, V2.overlay_version)


def test_download_that_keeps_breaking_off_fails_then_resumes_next_time(
    upgrade_to_v2: Upgrade,
) -> None:
    upgrade_to_v2.server.inject(LLAMA_ARCHIVE, *["truncate"] * 3)
    upgrade_to_v2.fails(DownloadIncomplete, "failed after 3 attempts: .*peer closed connection")
    assert parts(upgrade_to_v2.dirs) == [f"{LLAMA_ARCHIVE}.part", f"{LLAMA_ARCHIVE}.part.meta"]

    upgrade_to_v2.run()

    resumed = upgrade_to_v2.server.requested(LLAMA_ARCHIVE)[3]
    assert resumed.range is not None and resumed.status == 206
    assert_settled(upgrade_to_v2.dirs, V2.overlay_version)


def test_server_ignoring_range_restarts_from_zero(upgrade_to_v2: Upgrade) -> None:
    upgrade_to_v2.server.inject(LLAMA_ARCHIVE, "truncate", "ignore_range")

    upgrade_to_v2.run()

    _, ignored = upgrade_to_v2.server.requested(LLAMA_ARCHIVE)
    assert ignored.range is not None and ignored.status == 200
    assert_settled(upgrade_to_v2.dirs, V2.overlay_version)


def test_wrong_content_range_restarts_from_zero(upgrade_to_v2: Upgrade) -> None:
    upgrade_to_v2.server.inject(LLAMA_ARCHIVE, "truncate", "wrong_range")

    upgrade_to_v2.run()

    requests = upgrade_to_v2.server.requested(LLAMA_ARCHIVE)
    assert [(r.range is not None, r.status) for r in requests] == [
        (False, 200),
        (True, 206),
        (False, 200),
    ]
    assert_settled(upgrade_to_v2.dirs, V2.overlay_version)


def test_partial_answer_to_a_whole_file_request_aborts(upgrade_to_v2: Upgrade) -> None:
    upgrade_to_v2.server.inject(LLAMA_ARCHIVE, "bogus_206", forever=True)
    upgrade_to_v2.fails(DownloadError, "answered a whole-file request with a partial body")
    assert parts(upgrade_to_v2.dirs) == []


def test_endless_body_is_cut_at_the_signed_size(upgrade_to_v2: Upgrade) -> None:
    upgrade_to_v2.server.inject(LLAMA_ARCHIVE, "endless", forever=True)
    upgrade_to_v2.fails(DownloadError, "sent more than the signed size of")
    assert parts(upgrade_to_v2.dirs) == []


def test_slow_drip_hits_the_overall_deadline(upgrade_to_v2: Upgrade) -> None:
    upgrade_to_v2.server.inject(LLAMA_ARCHIVE, "slow", forever=True)
    upgrade_to_v2.fails(DownloadError, r"is too slow: \d+ of \d+ bytes arrived within")


def test_server_error_is_retried(upgrade_to_v2: Upgrade) -> None:
    upgrade_to_v2.server.inject(LLAMA_ARCHIVE, "unavailable")

    upgrade_to_v2.run()

    assert [r.status for r in upgrade_to_v2.server.requested(LLAMA_ARCHIVE)] == [503, 200]
    assert_settled(upgrade_to_v2.dirs, V2.overlay_version)


def test_missing_archive_names_the_http_status(upgrade_to_v2: Upgrade) -> None:
    upgrade_to_v2.server.inject(LLAMA_ARCHIVE, "missing", forever=True)
    upgrade_to_v2.fails(DownloadError, "answered HTTP 404")


# -- signatures ----------------------------------------------------------------------------


def _tamper(path: Path, keys: Keys, stranger: Keys) -> None:
    path.write_bytes(path.read_bytes() + b"\n")


def _unsign(path: Path, keys: Keys, stranger: Keys) -> None:
    path.with_name(path.name + ".sig").unlink()


def _sign_by_stranger(path: Path, keys: Keys, stranger: Keys) -> None:
    path.with_name(path.name + ".sig").write_bytes(sign(path.read_bytes(), stranger.private))


@pytest.mark.parametrize("document", [INDEX, LLAMA_MANIFEST], ids=["index", "manifest"])
@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_tamper, "bad signature: the signed bytes were changed"),
        (_unsign, "its signature cannot be fetched .*HTTP 404"),
        (_sign_by_stranger, "the signature is from unknown key"),
    ],
    ids=["tampered", "missing", "wrong-key"],
)
def test_bad_signatures_are_refused(
    upgrade_to_v2: Upgrade,
    stranger_keys: Keys,
    document: str,
    damage: Callable[[Path, Keys, Keys], None],
    message: str,
) -> None:
    damage(upgrade_to_v2.server.root / document, upgrade_to_v2.keys, stranger_keys)
    error = upgrade_to_v2.fails(SignatureError, message)
    assert document in str(error)
    assert not any(r.path.endswith(".tar.zst") for r in upgrade_to_v2.server.requests)


def test_replayed_older_index_is_refused(upgrade: Upgrade) -> None:
    old_index = upgrade.publish(V2, serial=4)
    old = {path: path.read_bytes() for path in (old_index, old_index.with_name(INDEX + ".sig"))}
    old_index.unlink()
    upgrade.publish(V2, serial=5)
    upgrade.server.inject(LLAMA_ARCHIVE, "missing", forever=True)
    upgrade.fails(DownloadError, "HTTP 404")  # index serial 5 was accepted all the same
    for path, data in old.items():
        path.write_bytes(data)

    upgrade.fails(ReplayedRelease, "has serial 4, older than serial 5 already accepted here")


def test_release_older_than_an_accepted_one_is_refused(upgrade: Upgrade) -> None:
    upgrade.publish(dataclasses.replace(V2, serial=0), serial=3)
    upgrade.fails(ReplayedRelease, "has serial 0, older than serial 1 already accepted here")


# -- releases that do not fit ------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("platform", "win_amd64"),
        ("cuda_version", "12.8"),
        ("llama_cpp_version", "0.3.30"),
    ],
)
def test_manifest_for_another_target_than_its_release_is_refused(
    upgrade: Upgrade, field: str, value: str
) -> None:
    upgrade.publish(dataclasses.replace(V2, runtime_overrides={field: value}))
    upgrade.fails(
        IncompatibleOverlay, f"cuda-runtime: {field} is '{re.escape(value)}', the release says"
    )


def test_index_entry_that_its_manifests_contradict_is_refused(upgrade: Upgrade) -> None:
    cuda12: dict[str, Any] = {"cuda_version": "12.8"}
    index = upgrade.publish(
        dataclasses.replace(V2, runtime_overrides=cuda12, llama_overrides=cuda12)
    )
    rewrite_list(
        index, upgrade.keys, lambda document: document["overlays"][0].update(cuda_version="13.0")
    )
    error = upgrade.fails(IncompatibleOverlay, "do not match the release")
    assert "llama-cuda: cuda_version is '12.8', the release says '13.0'" in str(error)


@pytest.mark.parametrize(
    ("target", "spec", "message"),
    [
        (
            TARGET,
            dataclasses.replace(
                V2,
                runtime_overrides={"platform": "win_amd64"},
                llama_overrides={"platform": "win_amd64"},
            ),
            "offers no overlay for linux_x86_64",
        ),
        (
            dataclasses.replace(
                TARGET, machine=GPU_REPORT.model_copy(update={"cuda_driver_version": "12.4"})
            ),
            V2,
            "0.3.36-cu13.0-2: the driver supports CUDA 12.4 at most",
        ),
        (dataclasses.replace(TARGET, llama_cpp_version="0.3.35"), V2, "llama_cpp 0.3.35"),
        (
            dataclasses.replace(
                TARGET,
                machine=GPU_REPORT.model_copy(
                    update={"cuda_driver_version": None, "driver_version": None}
                ),
            ),
            V2,
            "driver version could not be read",
        ),
    ],
    ids=["platform", "old-driver", "llama-version", "no-driver"],
)
def test_no_release_for_this_machine(
    upgrade: Upgrade, target: Target, spec: ReleaseSpec, message: str
) -> None:
    upgrade.publish(spec)
    upgrade.fails(NoMatchingOverlay, message, target=target)

"""Hostile, corrupt and oversized layer archives, and a full disk, during an overlay upgrade.

The archives are signed by the trusted key (as if the signing key or the build were
compromised): the archive checks themselves must stop them. Each test ends asserting that the
previous overlay is still active, nothing is half-installed and nothing was written outside
the data dir.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tarfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from llamaship.io.fs import DiskSpaceError
from llamaship.overlay.extract import ArchiveError, extract_layer
from llamaship.overlay.install import Installer, InstallOptions, install_from_path
from llamaship.paths import DataDirs
from llamaship_contract.errors import LlamashipError
from llamaship_contract.layer_files import FileEntry
from llamaship_contract.overlay import parse_manifest
from overlay_kit.checks import assert_settled, nothing_written_outside
from overlay_kit.child import start_installer
from overlay_kit.probe import layer_probe
from overlay_kit.releases import (
    FAST_OPTIONS,
    TARGET,
    Keys,
    Member,
    ReleaseFactory,
    ReleaseSpec,
    layer_members,
    member,
    runtime_files,
    tar_zst,
)
from overlay_kit.server import OverlayServer

V1 = ReleaseSpec(overlay_version="0.3.36-cu13.0-1", serial=1)
V2 = ReleaseSpec(overlay_version="0.3.36-cu13.0-2", serial=2, runtime=runtime_files("v2"))
ESCAPE_DIR = Path("/tmp") / f"llamaship-escape-{uuid.uuid4().hex}"


@pytest.fixture
def v1_active(
    tmp_path: Path, releases: ReleaseFactory, release_keys: Keys, data_dirs: DataDirs
) -> DataDirs:
    install_from_path(
        releases.publish(tmp_path / "v1-release", V1),
        data_dirs,
        TARGET,
        [release_keys.public],
        probe=layer_probe,
        options=FAST_OPTIONS,
    )
    return data_dirs


def install_fails(
    dirs: DataDirs,
    index: Path,
    keys: Keys,
    error_type: type[LlamashipError],
    message: str,
    options: InstallOptions = FAST_OPTIONS,
) -> LlamashipError:
    with (
        nothing_written_outside(index.parent.parent, dirs.home),
        pytest.raises(error_type, match=message) as caught,
    ):
        install_from_path(index, dirs, TARGET, [keys.public], probe=layer_probe, options=options)
    assert_settled(dirs, V1.overlay_version)
    return caught.value


def hostile(change: Callable[[list[Member]], None]) -> Callable[[Path, Sequence[FileEntry]], bytes]:
    """An archive writer: the layer's normal members, changed by `change`."""

    def write(root: Path, files: Sequence[FileEntry]) -> bytes:
        members = layer_members(root, files)
        change(members)
        return tar_zst(members)

    return write


def _add(*extra: Member) -> Callable[[list[Member]], None]:
    return lambda members: members.extend(extra)


def _set_mode(mode: int) -> Callable[[list[Member]], None]:
    def change(members: list[Member]) -> None:
        members[0][0].mode = mode

    return change


def _replace_content(data: bytes) -> Callable[[list[Member]], None]:
    def change(members: list[Member]) -> None:
        index = next(i for i, (info, _) in enumerate(members) if info.name.endswith("cuda.so"))
        info = members[index][0]
        info.size = len(data)
        members[index] = (info, data)

    return change


def _drop_last(members: list[Member]) -> None:
    members.pop()


def _duplicate_first(members: list[Member]) -> None:
    members.append(members[0])


def _pax_bomb(members: list[Member]) -> None:
    members[0][0].pax_headers = {"comment": "x" * (4 * 2**20)}


LLAMA, RUNTIME = "llama_archive", "runtime_archive"
HOSTILE = {
    "dotdot": (
        _add(member("backends/../../escaped.txt", b"x")),
        "'..' component: it would be written outside the layer",
        LLAMA,
    ),
    "absolute": (
        _add(member(f"{ESCAPE_DIR}/evil.txt", b"x")),
        "is absolute: it would be written outside the layer",
        LLAMA,
    ),
    "escaping-symlink": (
        _add(
            member(
                "backends/escape",
                type=tarfile.SYMTYPE,
                linkname="../../../../../../etc/passwd",
            )
        ),
        "is a symlink to '../../../../../../etc/passwd', outside the layer",
        LLAMA,
    ),
    "absolute-symlink": (
        _add(member("backends/escape", type=tarfile.SYMTYPE, linkname=str(ESCAPE_DIR))),
        "outside the layer",
        LLAMA,
    ),
    "hardlink": (
        _add(member("backends/hard", type=tarfile.LNKTYPE, linkname="backends/libggml-cuda.so")),
        "is a hardlink",
        LLAMA,
    ),
    "char-device": (
        _add(member("backends/null", type=tarfile.CHRTYPE, devmajor=1, devminor=3)),
        "is a device file, FIFO or other special file",
        LLAMA,
    ),
    "fifo": (
        _add(member("backends/pipe", type=tarfile.FIFOTYPE)),
        "is a device file, FIFO or other special file",
        LLAMA,
    ),
    "setuid": (_set_mode(0o4755), "has the setuid or setgid bit", LLAMA),
    "setgid": (_set_mode(0o2755), "has the setuid or setgid bit", LLAMA),
    "unlisted-file": (
        _add(member("backends/libggml-extra.so", b"\x7fELF")),
        "is not listed in the signed manifest",
        LLAMA,
    ),
    "unlisted-dir": (
        _add(member("backends/plugins", type=tarfile.DIRTYPE)),
        "is a directory no listed file lives in",
        LLAMA,
    ),
    "duplicate": (_duplicate_first, "appears twice", LLAMA),
    "through-symlink": (  # the runtime layer's libcudart.so is a link
        _add(member("lib/libcudart.so/inner", b"x")),
        "lies under a symlink",
        RUNTIME,
    ),
    "size-bomb": (
        _replace_content(bytes(64 * 2**20)),
        "is 67108864 bytes; the manifest lists 49152",
        LLAMA,
    ),
    "pax-bomb": (_pax_bomb, r"unpacks to more than the \d+ bytes its manifest allows", LLAMA),
    "wrong-content": (
        _replace_content(bytes(48 * 1024)),
        "does not match its signed manifest: .*cuda.so has sha256",
        LLAMA,
    ),
    "missing-file": (_drop_last, r"does not match its signed manifest: .* is missing", LLAMA),
}


@pytest.mark.parametrize(("change", "message", "layer"), HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_archive_is_refused(
    v1_active: DataDirs,
    releases: ReleaseFactory,
    release_keys: Keys,
    tmp_path: Path,
    change: Callable[[list[Member]], None],
    message: str,
    layer: str,
) -> None:
    index = releases.publish(
        tmp_path / "v2-release", dataclasses.replace(V2, **{layer: hostile(change)})
    )

    install_fails(v1_active, index, release_keys, ArchiveError, message)

    assert not ESCAPE_DIR.exists()


def test_garbage_instead_of_zstd_is_refused(
    v1_active: DataDirs, releases: ReleaseFactory, release_keys: Keys, tmp_path: Path
) -> None:
    spec = dataclasses.replace(V2, llama_archive=lambda root, files: b"not zstd at all" * 100)
    index = releases.publish(tmp_path / "v2-release", spec)
    install_fails(v1_active, index, release_keys, ArchiveError, "is not a valid .tar.zst archive")


def test_manifest_claiming_more_than_the_ceiling_is_refused(
    v1_active: DataDirs, releases: ReleaseFactory, release_keys: Keys, tmp_path: Path
) -> None:
    index = releases.publish(tmp_path / "v2-release", V2)
    options = dataclasses.replace(FAST_OPTIONS, max_unpacked_bytes=64 * 1024)
    install_fails(
        v1_active,
        index,
        release_keys,
        ArchiveError,
        r"claims 98304 unpacked bytes, more than the 65536 llamaship accepts",
        options=options,
    )


def test_entry_ceiling_stops_an_archive_early(releases: ReleaseFactory, tmp_path: Path) -> None:
    [_, llama_manifest] = releases.release(tmp_path / "release", V2)
    manifest = parse_manifest(llama_manifest.read_bytes())
    staging = tmp_path / "staging"
    staging.mkdir()
    with pytest.raises(ArchiveError, match="holds more than the 1 entries"):
        extract_layer(
            llama_manifest.parent / manifest.archive.name, staging, manifest, max_entries=1
        )


# -- a full disk ---------------------------------------------------------------------------


def test_not_enough_free_space_is_refused_before_downloading(
    v1_active: DataDirs, releases: ReleaseFactory, release_keys: Keys, tmp_path: Path
) -> None:
    huge = 2**50  # 1 PiB: no test machine has that much free
    files = (
        FileEntry(
            path="backends/libggml-cuda.so", size=huge, sha256=hashlib.sha256(b"").hexdigest()
        ),
    )
    spec = dataclasses.replace(V2, llama_overrides={"files": files, "unpacked_size": huge})
    index = releases.publish(tmp_path / "v2-release", spec)
    install_fails(
        v1_active,
        index,
        release_keys,
        DiskSpaceError,
        r"not enough disk space for the overlay download and unpacking: it needs",
    )


@pytest.mark.parametrize("source", ["http", "local"])
def test_disk_filling_up_mid_write_is_a_clean_failure(
    v1_active: DataDirs,
    releases: ReleaseFactory,
    release_keys: Keys,
    tmp_path: Path,
    overlay_server: OverlayServer,
    source: str,
) -> None:
    """A real write error from the kernel: the child runs under RLIMIT_FSIZE (32 KiB), so the
    first write past it fails with EFBIG, as a write to a full disk fails with ENOSPC (the
    installer treats both alike). Unprivileged, unlike mounting a tiny tmpfs."""
    folder = overlay_server.root if source == "http" else tmp_path / "v2-release"
    index = releases.publish(folder, V2)
    location = overlay_server.url + "releases.json" if source == "http" else str(index)
    what = "downloading" if source == "http" else "unpacking"

    with nothing_written_outside(tmp_path, v1_active.home):
        code, out, _ = start_installer(
            v1_active.home, location, [release_keys.public], file_size_limit=32 * 1024
        ).finish()

    assert code == DiskSpaceError.exit_code
    assert f"DiskSpaceError: the disk filled up while {what}" in out
    assert "File too large" in out
    assert_settled(v1_active, V1.overlay_version)
    assert list(v1_active.downloads.glob("*")) == []


def test_upgrade_after_a_failure_succeeds(
    v1_active: DataDirs, releases: ReleaseFactory, release_keys: Keys, tmp_path: Path
) -> None:
    bad = releases.publish(
        tmp_path / "bad",
        dataclasses.replace(V2, llama_archive=hostile(_add(member("backends/extra.so", b"x")))),
    )
    install_fails(v1_active, bad, release_keys, ArchiveError, "not listed")
    good = releases.publish(tmp_path / "good", V2)

    result = Installer(
        v1_active, [release_keys.public], probe=layer_probe, options=FAST_OPTIONS
    ).install(str(good), TARGET)

    assert result.overlay.overlay_version == V2.overlay_version
    assert_settled(v1_active, V2.overlay_version)

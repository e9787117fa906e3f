"""Bundle archives and overlay layer archives are byte-identical from identical trees."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest
import zstandard

from llamaship_build import platforms
from llamaship_build.archive import SUFFIXES, entries, make_archive, source_date_epoch, unpack
from llamaship_build.errors import BuildError
from llamaship_build.overlay_archive import layer_files, write_layer_archive

FORMATS = ("zstd", "xz", "zip")


def _tree(root: Path, *, mtime: int, private: bool) -> Path:
    """The same content; mtimes, permission bits and creation order differ per call."""
    bundle = root / "backend"
    (bundle / "_internal" / "llama_cpp" / "lib").mkdir(parents=True)
    files = {
        "backend": b"\x7fELF executable",
        "_internal/base_library.zip": b"PK" * 5000,
        "_internal/llama_cpp/lib/libggml.so.0": b"\x7fELF" * 40000,
        "_internal/llama_cpp/__init__.py": b"# llama\n",
    }
    for name in sorted(files) if private else sorted(files, reverse=True):
        path = bundle / name
        path.write_bytes(files[name])
        executable = name == "backend" or name.endswith(".so.0")
        path.chmod((0o700 if private else 0o775) if executable else (0o600 if private else 0o664))
        os.utime(path, (mtime, mtime))
    (bundle / "_internal" / "llama_cpp" / "lib" / "libggml.so").symlink_to("libggml.so.0")
    return bundle


@pytest.mark.parametrize("archive_format", FORMATS)
def test_trees_at_different_paths_give_identical_archives(
    tmp_path: Path, archive_format: str
) -> None:
    first = _tree(tmp_path / "a", mtime=1_700_000_000, private=True)
    second = _tree(tmp_path / "elsewhere" / "b", mtime=1_800_000_000, private=False)
    suffix = SUFFIXES[archive_format]
    one = make_archive(first, tmp_path / f"one{suffix}", archive_format, mtime=1_750_000_000)
    two = make_archive(second, tmp_path / f"two{suffix}", archive_format, mtime=1_750_000_000)
    assert one.read_bytes() == two.read_bytes()
    other = make_archive(second, tmp_path / f"three{suffix}", archive_format, mtime=1_750_000_002)
    assert other.read_bytes() != one.read_bytes()  # the stamp is in there (zip: 2 s steps)


def test_zstd_output_does_not_depend_on_the_worker_count(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "a", mtime=1, private=True)
    one = make_archive(tree, tmp_path / "1.tar.zst", "zstd", mtime=0, zstd_threads=1)
    two = make_archive(tree, tmp_path / "2.tar.zst", "zstd", mtime=0, zstd_threads=2)
    assert one.read_bytes() == two.read_bytes()
    with pytest.raises(BuildError, match="single-threaded"):
        make_archive(tree, tmp_path / "0.tar.zst", "zstd", mtime=0, zstd_threads=0)
    params = zstandard.get_frame_parameters(one.read_bytes()[:18])
    assert params.content_size == zstandard.CONTENTSIZE_UNKNOWN
    assert params.has_checksum


def test_tar_entries_are_normalised_and_links_kept(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "a", mtime=1, private=True)
    archive = make_archive(tree, tmp_path / "b.tar.zst", "zstd", mtime=1_750_000_000)
    listed = list(entries(archive))
    assert [entry.name for entry in listed] == sorted(entry.name for entry in listed)
    modes = {entry.name: (entry.kind, entry.mode) for entry in listed}
    assert modes["backend/backend"] == ("file", 0o755)
    assert modes["backend/_internal/llama_cpp/__init__.py"] == ("file", 0o644)
    assert modes["backend/_internal"] == ("dir", 0o755)
    assert modes["backend/_internal/llama_cpp/lib/libggml.so"] == ("link", 0o777)
    with (
        open(archive, "rb") as raw,
        zstandard.ZstdDecompressor().stream_reader(raw) as stream,
        tarfile.open(fileobj=stream, mode="r|") as tar,
    ):
        for member in tar:
            assert (member.mtime, member.uid, member.gid, member.uname, member.gname) == (
                1_750_000_000,
                0,
                0,
                "",
                "",
            )
            assert not {"atime", "ctime", "uid", "gid"} & set(member.pax_headers)


@pytest.mark.parametrize("archive_format", ["zstd", "xz"])
def test_unpack_gives_back_the_tree(tmp_path: Path, archive_format: str) -> None:
    tree = _tree(tmp_path / "a", mtime=1, private=True)
    archive = make_archive(tree, tmp_path / f"b{SUFFIXES[archive_format]}", archive_format)
    seconds = unpack(archive, tmp_path / "out")
    assert seconds > 0
    unpacked = tmp_path / "out" / "backend"
    assert (unpacked / "backend").read_bytes() == (tree / "backend").read_bytes()
    assert (unpacked / "_internal/llama_cpp/lib/libggml.so").readlink() == Path("libggml.so.0")


def test_source_date_epoch_comes_from_the_environment() -> None:
    assert source_date_epoch({}) == 315532800
    assert source_date_epoch({"SOURCE_DATE_EPOCH": "1764547200"}) == 1764547200
    assert source_date_epoch({"SOURCE_DATE_EPOCH": "0"}) == 315532800  # zip starts in 1980
    with pytest.raises(BuildError, match="SOURCE_DATE_EPOCH must be whole seconds"):
        source_date_epoch({"SOURCE_DATE_EPOCH": "yesterday"})


def test_overlay_layer_archives_are_identical_from_trees_at_different_paths(tmp_path: Path) -> None:
    refs = []
    for index, root in enumerate((tmp_path / "x" / "layer", tmp_path / "y" / "z" / "layer")):
        (root / "lib").mkdir(parents=True)
        library = root / "lib" / "libcudart.so.13"
        library.write_bytes(b"\x7fELF" * 50000)
        library.chmod(0o700 if index else 0o755)
        os.utime(library, (index * 1000, index * 1000))
        (root / "lib" / "libcudart.so").symlink_to("libcudart.so.13")
        files = layer_files(root)
        refs.append(write_layer_archive(root, files, tmp_path / f"{index}.tar.zst", level=3))
    assert refs[0].sha256 == refs[1].sha256
    assert (tmp_path / "0.tar.zst").read_bytes() == (tmp_path / "1.tar.zst").read_bytes()


@pytest.mark.parametrize(
    ("system", "machine", "tag", "suffix"),
    [
        ("linux", "x86_64", "linux-x86_64", ".tar.xz"),
        ("win32", "AMD64", "windows-amd64", ".zip"),
        ("darwin", "arm64", "macos-arm64", ".tar.xz"),
    ],
)
def test_each_os_has_its_own_asset_name(system: str, machine: str, tag: str, suffix: str) -> None:
    target = platforms.current(system)
    assert (target.tag(machine), target.archive_suffix()) == (tag, suffix)


def test_an_unknown_os_is_refused() -> None:
    with pytest.raises(BuildError, match="cannot build a bundle on sunos5"):
        platforms.current("sunos5")

"""Reproducible archives of a directory: `.tar.zst`, `.tar.xz` or `.zip`.

Same tree, same bytes, wherever the tree lies: entries sorted by path, every mtime set to
`SOURCE_DATE_EPOCH` (1980-01-01 when unset), owner 0:0 without user or group names, modes
normalised (0755 for directories and executables, 0644 for other files, links 0777), PAX
format, no device numbers, no access or change times. Compression settings are fixed: zstd in
multithreaded mode (its output does not depend on the number of workers) without a content
size in the frame header; xz with one thread; zip deflate level 9 with fixed timestamps.
"""

from __future__ import annotations

import lzma
import os
import stat
import tarfile
import time
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO

from llamaship_build.errors import BuildError

if TYPE_CHECKING:
    import zstandard

DEFAULT_EPOCH = 315532800  # 1980-01-01T00:00:00Z, zip's earliest date
ZSTD_LEVEL = 19
XZ_PRESET = 9
# The archive formats and their file name suffixes.
SUFFIXES = {"zstd": ".tar.zst", "xz": ".tar.xz", "zip": ".zip"}
_CHUNK = 1 << 20


def source_date_epoch(env: Mapping[str, str] | None = None) -> int:
    """`SOURCE_DATE_EPOCH` from `env` (default: the process environment), else 1980-01-01.

    Zip cannot store dates before 1980: earlier epochs are raised to it.
    """
    environment = os.environ if env is None else env
    text = environment.get("SOURCE_DATE_EPOCH", "").strip()
    if not text:
        return DEFAULT_EPOCH
    try:
        epoch = int(text)
    except ValueError:
        msg = f"SOURCE_DATE_EPOCH must be whole seconds since 1970, not {text!r}"
        raise BuildError(msg) from None
    return max(epoch, DEFAULT_EPOCH)


def members(root: Path) -> list[Path]:
    """Every path under `root` (links not followed), sorted by its relative POSIX path."""
    return sorted(root.rglob("*"), key=lambda path: path.relative_to(root).as_posix())


def _tar_info(path: Path, arcname: str, mtime: int) -> tarfile.TarInfo:
    """A TarInfo built from `lstat` with nothing machine- or user-specific in it."""
    status = path.lstat()
    info = tarfile.TarInfo(arcname)
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if stat.S_ISLNK(status.st_mode):
        info.type = tarfile.SYMTYPE
        info.linkname = str(path.readlink())
        info.mode = 0o777
    elif stat.S_ISDIR(status.st_mode):
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    elif stat.S_ISREG(status.st_mode):
        info.size = status.st_size
        info.mode = 0o755 if status.st_mode & 0o111 else 0o644
    else:
        msg = f"{path} is not a file, directory or symlink: it cannot go into an archive"
        raise BuildError(msg)
    return info


def _write_tar(root: Path, sink: IO[bytes], mtime: int) -> None:
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_tar_info(root, root.name, mtime))
        for path in members(root):
            info = _tar_info(path, f"{root.name}/{path.relative_to(root).as_posix()}", mtime)
            if info.isreg():
                with open(path, "rb") as data:
                    tar.addfile(info, data)
            else:
                tar.addfile(info)


def zstd_compressor(level: int = ZSTD_LEVEL, threads: int = -1) -> zstandard.ZstdCompressor:
    """The one zstd setting for reproducible output (shared with the overlay layers).

    `threads` >= 1 or -1 (one worker per CPU) selects zstd's multithreaded mode, whose output
    is the same for any worker count; 0 (single-threaded mode) would give other bytes.
    """
    import zstandard

    if threads == 0:
        msg = "zstd threads=0 selects single-threaded mode: use -1 or >= 1 for stable output"
        raise BuildError(msg)
    return zstandard.ZstdCompressor(
        level=level, threads=threads, write_checksum=True, write_content_size=False
    )


def _write_zstd(root: Path, raw: BinaryIO, mtime: int, level: int, threads: int) -> None:
    with zstd_compressor(level, threads).stream_writer(raw, closefd=False) as compressed:
        _write_tar(root, compressed, mtime)


def _write_xz(root: Path, raw: BinaryIO, mtime: int) -> None:
    with lzma.LZMAFile(
        raw, "wb", format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=XZ_PRESET
    ) as compressed:
        _write_tar(root, compressed, mtime)


def _write_zip(root: Path, target: Path, mtime: int) -> None:
    date_time = time.gmtime(mtime)[:6]
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for path in members(root):
            if path.is_dir() or not path.is_file():
                continue  # zip holds no links: Windows bundles are built without them
            info = zipfile.ZipInfo(
                f"{root.name}/{path.relative_to(root).as_posix()}", date_time=date_time
            )
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix: the modes below mean the same on every build host
            mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16
            with open(path, "rb") as source, archive.open(info, "w") as sink:
                for block in iter(lambda: source.read(_CHUNK), b""):
                    sink.write(block)


def make_archive(
    root: Path,
    target: Path,
    archive_format: str,
    *,
    mtime: int | None = None,
    zstd_threads: int = -1,
) -> Path:
    """Pack `root` as `<root.name>/...` into `target`, reproducibly and atomically.

    `archive_format`: "zstd", "xz" or "zip". `mtime` defaults to `source_date_epoch()`.
    """
    if archive_format not in SUFFIXES:
        msg = f"unknown archive format {archive_format!r}: use {', '.join(SUFFIXES)}"
        raise BuildError(msg)
    stamp = source_date_epoch() if mtime is None else mtime
    temporary = target.with_name(target.name + ".partial")
    try:
        if archive_format == "zip":
            _write_zip(root, temporary, stamp)
        else:
            with open(temporary, "wb") as raw:
                if archive_format == "zstd":
                    _write_zstd(root, raw, stamp, ZSTD_LEVEL, zstd_threads)
                else:
                    _write_xz(root, raw, stamp)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return target


@dataclass(frozen=True)
class Entry:
    """One archive member: its path, kind ("file", "dir", "link"), mode and size."""

    name: str
    kind: str
    mode: int
    size: int


def decompressed(path: Path, raw: BinaryIO) -> IO[bytes]:
    if path.name.endswith(SUFFIXES["zstd"]):
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(raw)
    if path.name.endswith(SUFFIXES["xz"]):
        return lzma.LZMAFile(raw, "rb")
    msg = f"{path.name} is not a .tar.zst or .tar.xz archive"
    raise BuildError(msg)


def entries(path: Path) -> Iterator[Entry]:
    """The members of an archive this module wrote, in archive order."""
    if path.name.endswith(SUFFIXES["zip"]):
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                yield Entry(
                    info.filename, "file", (info.external_attr >> 16) & 0o7777, info.file_size
                )
        return
    with (
        open(path, "rb") as raw,
        decompressed(path, raw) as stream,
        tarfile.open(fileobj=stream, mode="r|") as tar,
    ):
        for member in tar:
            kind = "link" if member.issym() else "dir" if member.isdir() else "file"
            yield Entry(member.name, kind, member.mode, member.size)


def unpack(path: Path, dest: Path) -> float:
    """Unpack an archive this module wrote into `dest` (tar's `data` filter); seconds taken."""
    started = time.perf_counter()
    if path.name.endswith(SUFFIXES["zip"]):
        with zipfile.ZipFile(path) as archive:
            archive.extractall(dest)
    else:
        with (
            open(path, "rb") as raw,
            decompressed(path, raw) as stream,
            tarfile.open(fileobj=stream, mode="r|") as tar,
        ):
            tar.extractall(dest, filter="data")
    return time.perf_counter() - started

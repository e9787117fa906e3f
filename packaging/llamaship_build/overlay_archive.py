"""Deterministic `.tar.zst` archives of a staged overlay layer, and its manifest file list.

Same input, same bytes: members sorted by path, fixed mtime, owner 0:0 without names, modes
normalized (0755 for executables and libraries, 0644 otherwise, links 0777), PAX format, and
zstd in multithreaded mode (its output does not depend on the number of worker threads).
The archive holds exactly the manifest's files: regular files and relative symlinks, no
directory entries (extractors create parents).
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, cast

from llamaship_build.archive import zstd_compressor
from llamaship_build.errors import BuildError
from llamaship_contract.hashing import sha256_of
from llamaship_contract.layer_files import ArchiveRef, FileEntry

MTIME = 315532800  # 1980-01-01T00:00:00Z: fixed, so rebuilds are byte-identical
DEFAULT_LEVEL = 19
_CHUNK = 1 << 20


def layer_files(root: Path) -> tuple[FileEntry, ...]:
    """Every file under `root`, sorted by path; a symlink carries its target's size and hash."""
    paths = sorted(
        (path for path in root.rglob("*") if not path.is_dir() or path.is_symlink()),
        key=lambda path: path.relative_to(root).as_posix(),
    )
    regular: dict[Path, FileEntry] = {}
    links: list[Path] = []
    for path in paths:
        relative = path.relative_to(root).as_posix()
        if path.is_symlink():
            links.append(path)
        elif path.is_file():
            regular[path] = FileEntry(
                path=relative, size=path.stat().st_size, sha256=sha256_of(path)
            )
        else:
            msg = f"{path} is neither a regular file nor a symlink: a layer holds only those"
            raise BuildError(msg)
    entries = dict(regular)
    for path in links:
        target_text = str(path.readlink())
        target = Path(os.path.normpath(path.parent / target_text))
        if Path(target_text).is_absolute() or target not in regular:
            msg = (
                f"symlink {path} -> {target_text} must point to a regular file of the same "
                "layer by a relative path"
            )
            raise BuildError(msg)
        entries[path] = FileEntry(
            path=path.relative_to(root).as_posix(),
            size=regular[target].size,
            sha256=regular[target].sha256,
            link=target_text,
        )
    return tuple(sorted(entries.values(), key=lambda entry: entry.path))


class _HashingWriter:
    """A write-only file that hashes and counts what passes through it."""

    def __init__(self, sink: BinaryIO) -> None:
        self.sink = sink
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.sink.write(data)

    def flush(self) -> None:
        self.sink.flush()


def _tar_info(root: Path, entry: FileEntry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.path)
    info.mtime = MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if entry.link is not None:
        info.type = tarfile.SYMTYPE
        info.linkname = entry.link
        info.mode = 0o777
    else:
        info.size = entry.size
        executable = (root / entry.path).stat().st_mode & 0o100
        info.mode = 0o755 if executable else 0o644
    return info


def write_layer_archive(
    root: Path, files: Sequence[FileEntry], target: Path, level: int = DEFAULT_LEVEL
) -> ArchiveRef:
    """Pack `files` (paths relative to `root`) into `target` (.tar.zst), atomically."""
    if not 1 <= level <= 22:
        msg = f"zstd level {level} is out of range: use 1 (fast) to 22 (smallest), default 19"
        raise BuildError(msg)
    partial = target.with_name(target.name + ".partial")
    # One worker per CPU, multithreaded mode even on one CPU, no content size: deterministic.
    compressor = zstd_compressor(level)
    try:
        with open(partial, "wb") as raw:
            hashing = _HashingWriter(raw)
            # stream_writer only calls write() and flush(): the hashing wrapper is enough.
            sink = cast(BinaryIO, hashing)
            with (
                compressor.stream_writer(sink, closefd=False) as compressed,
                tarfile.open(fileobj=compressed, mode="w|", format=tarfile.PAX_FORMAT) as tar,
            ):
                for entry in files:
                    info = _tar_info(root, entry)
                    if entry.link is None:
                        with open(root / entry.path, "rb") as data:
                            tar.addfile(info, data)
                    else:
                        tar.addfile(info)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return ArchiveRef(name=target.name, size=hashing.size, sha256=hashing.digest.hexdigest())

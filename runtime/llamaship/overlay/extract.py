"""Unpack a verified layer archive (`.tar.zst`) into a fresh staging directory, refusing anything
the signed manifest does not describe.

Every entry is checked before anything is written: no absolute paths, no `..`, no hardlinks,
device files or FIFOs, no setuid/setgid bits, symlinks only as the manifest lists them and only
inside the layer, nothing written through a symlink, regular files only at a listed path and
size. The decompressed stream is capped near the manifest's `unpacked_size` (plus tar headers)
and the entry count near the number of listed paths, so a decompression bomb stops early. After
unpacking, every file is checked against the manifest (size + sha256) and the tree must hold
nothing else; all problems are reported together. Files and directories are fsynced.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

from llamaship.io.fs import (
    STORAGE_FULL_ERRNOS,
    DiskSpaceError,
    ensure_free_space,
    fsync_dir,
)
from llamaship.overlay.checkpoints import InstallObserver, ignore_step
from llamaship_contract.errors import LlamashipError
from llamaship_contract.layer_files import FileEntry
from llamaship_contract.names import ExitStatus
from llamaship_contract.overlay import LayerManifest
from llamaship_contract.overlay_fields import safe_relative_path

if TYPE_CHECKING:
    import tarfile
else:  # PEP 706's extraction filters, also on the bundle's CPython 3.11.2 (added in 3.11.4)
    from backports import tarfile

_log = logging.getLogger(__name__)

# Ceilings whatever a manifest says: the real layers are ~0.7 GB (cuda-runtime) and ~0.1 GB.
MAX_UNPACKED_BYTES = 8 * 2**30
MAX_ENTRIES = 20_000
# Tar framing allowed per entry (header, pax header, padding) and at the end (zero blocks).
_TAR_BYTES_PER_ENTRY = 8 * 512
_TAR_BYTES_AT_END = 20 * 512
_CHUNK = 1024 * 1024


class ArchiveError(LlamashipError):
    """A layer archive does not match its signed manifest or is unsafe to unpack."""

    exit_code = ExitStatus.ARCHIVE


class _CappedReader:
    """A read-only stream that fails once more than `limit` bytes were read from it."""

    def __init__(self, raw: IO[bytes], limit: int, what: str) -> None:
        self._raw = raw
        self._limit = limit
        self._what = what
        self.done = 0

    def read(self, size: int = -1) -> bytes:
        if size < 0 or self.done + size > self._limit:
            size = self._limit - self.done + 1
        data = self._raw.read(size)
        self.done += len(data)
        if self.done > self._limit:
            msg = (
                f"{self._what} unpacks to more than the {self._limit} bytes its manifest "
                "allows (a decompression bomb?): refused"
            )
            raise ArchiveError(msg)
        return data


def _parents(path: str) -> Iterator[str]:
    parent = posixpath.dirname(path)
    while parent:
        yield parent
        parent = posixpath.dirname(parent)


class _Extraction:
    """The state of one archive's extraction into `staging`."""

    def __init__(self, staging: Path, manifest: LayerManifest, observer: InstallObserver) -> None:
        self.staging = staging
        self.observer = observer
        self.manifest = manifest
        self.what = f"layer archive {manifest.archive.name}"
        self.expected: dict[str, FileEntry] = {entry.path: entry for entry in manifest.files}
        self.dirs = {parent for path in self.expected for parent in _parents(path)}
        self.seen: set[str] = set()
        self.links: set[str] = set()
        self.hashes: dict[str, str] = {}
        self.written = 0

    def refuse(self, name: str, why: str) -> ArchiveError:
        return ArchiveError(f"{self.what}: entry {name!r} {why}; the archive was not installed")

    def check(self, member: tarfile.TarInfo) -> str:
        """The entry's normalized name, after every check that needs no file system."""
        name = member.name  # tarfile already strips a directory's trailing "/"
        unsafe = safe_relative_path(name)
        if unsafe:
            raise self.refuse(name, f"{unsafe}: it would be written outside the layer")
        if member.islnk():
            raise self.refuse(name, f"is a hardlink (to {member.linkname!r}); layers hold none")
        if not (member.isreg() or member.isdir() or member.issym()):
            raise self.refuse(name, "is a device file, FIFO or other special file")
        if member.mode & 0o6000:
            raise self.refuse(name, "has the setuid or setgid bit")
        if name in self.seen:
            raise self.refuse(name, "appears twice")
        if any(parent in self.links for parent in _parents(name)):
            raise self.refuse(name, "lies under a symlink (it would be written through it)")
        if member.isdir():
            if name not in self.dirs:
                raise self.refuse(name, "is a directory no listed file lives in")
            return name
        if member.issym():
            target = posixpath.normpath(posixpath.join(posixpath.dirname(name), member.linkname))
            if member.linkname.startswith("/") or safe_relative_path(target):
                raise self.refuse(name, f"is a symlink to {member.linkname!r}, outside the layer")
        entry = self.expected.get(name)
        if entry is None:
            raise self.refuse(name, "is not listed in the signed manifest")
        if member.issym():
            if entry.link != member.linkname:
                raise self.refuse(
                    name,
                    f"is a symlink to {member.linkname!r}; the manifest "
                    f"lists {'a regular file' if entry.link is None else entry.link}",
                )
        elif entry.link is not None:
            raise self.refuse(
                name, f"is a regular file; the manifest lists a symlink to {entry.link}"
            )
        elif member.size != entry.size:
            raise self.refuse(name, f"is {member.size} bytes; the manifest lists {entry.size}")
        return name

    def unpack(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        name = self.check(member)
        try:  # the standard library's own guard, after ours (ours gives the clearer message)
            tarfile.data_filter(member, str(self.staging))
        except tarfile.FilterError as error:
            raise self.refuse(name, f"is refused by tarfile's data filter ({error})") from None
        self.seen.add(name)
        target = self.staging.joinpath(*name.split("/"))
        if member.isdir():
            target.mkdir(parents=True, exist_ok=True)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        if member.issym():
            target.symlink_to(member.linkname)
            self.links.add(name)
            return
        source = tar.extractfile(member)
        assert source is not None  # a regular file always has content
        self.written += member.size
        self.hashes[name] = _write(source, target, executable=bool(member.mode & 0o111))
        if len(self.hashes) == 1:
            self.observer("extract")

    def verify(self) -> None:
        """Check the unpacked tree against the manifest; one error lists every problem."""
        problems = [f"{path} is missing" for path in sorted(set(self.expected) - self.seen)]
        for name, digest in sorted(self.hashes.items()):
            if digest != self.expected[name].sha256:
                problems.append(
                    f"{name} has sha256 {digest}, the manifest lists {self.expected[name].sha256}"
                )
        root = os.path.realpath(self.staging)
        for directory, subdirs, files in os.walk(self.staging):
            for entry in [*subdirs, *files]:
                path = Path(directory, entry)
                relative = path.relative_to(self.staging).as_posix()
                if path.is_symlink():
                    resolved = os.path.realpath(path)
                    if os.path.commonpath([root, resolved]) != root or not Path(resolved).is_file():
                        problems.append(f"{relative} is a symlink that leaves the layer")
                elif relative not in self.expected and relative not in self.dirs:
                    problems.append(f"{relative} is not listed in the manifest")
        if problems:
            msg = f"{self.what} does not match its signed manifest: {'; '.join(problems)}"
            raise ArchiveError(msg)


def _write(source: IO[bytes], target: Path, *, executable: bool) -> str:
    """Copy `source` to a new file `target` (never following a link), fsynced; its sha256."""
    digest = hashlib.sha256()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(target, flags, 0o755 if executable else 0o644)
    with os.fdopen(fd, "wb") as handle:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            handle.write(chunk)
        handle.flush()
        os.fsync(handle.fileno())
    return digest.hexdigest()


def _fsync_tree(root: Path) -> None:
    for directory, _subdirs, _files in os.walk(root, topdown=False):
        fsync_dir(Path(directory))


def extract_layer(
    archive: Path,
    staging: Path,
    manifest: LayerManifest,
    *,
    max_unpacked_bytes: int = MAX_UNPACKED_BYTES,
    max_entries: int = MAX_ENTRIES,
    observer: InstallObserver = ignore_step,
) -> None:
    """Unpack `archive` (already verified against `manifest.archive`) into empty `staging`;
    `observer` is told `extract` once the first file is written.

    Raises ArchiveError (unsafe or mismatched content), DiskSpaceError; on error the caller
    discards `staging`.
    """
    import zstandard  # lazy: only installs unpack archives

    what = f"layer archive {manifest.archive.name}"
    if manifest.unpacked_size > max_unpacked_bytes:
        msg = (
            f"{what} claims {manifest.unpacked_size} unpacked bytes, more than the "
            f"{max_unpacked_bytes} llamaship accepts: refused"
        )
        raise ArchiveError(msg)
    if any(staging.iterdir()):
        msg = f"staging directory {staging} is not empty"
        raise ArchiveError(msg)
    ensure_free_space(staging, manifest.unpacked_size, f"unpacking {manifest.archive.name}")
    state = _Extraction(staging, manifest, observer)
    entry_limit = min(max_entries, len(state.expected) + len(state.dirs))
    stream_limit = (
        manifest.unpacked_size + _TAR_BYTES_AT_END + _TAR_BYTES_PER_ENTRY * (entry_limit + 1)
    )
    try:
        with (
            archive.open("rb") as compressed,
            zstandard.ZstdDecompressor().stream_reader(compressed, read_across_frames=True) as raw,
        ):
            capped = _CappedReader(raw, stream_limit, what)
            with tarfile.open(fileobj=capped, mode="r|") as tar:  # type: ignore[call-overload]
                for count, member in enumerate(tar, start=1):
                    if count > entry_limit:
                        msg = (
                            f"{what} holds more than the {entry_limit} entries its manifest "
                            "describes (a decompression bomb?): refused"
                        )
                        raise ArchiveError(msg)
                    state.unpack(tar, member)
    except (tarfile.TarError, zstandard.ZstdError) as error:
        msg = f"{what} is not a valid .tar.zst archive ({error}); download it again"
        raise ArchiveError(msg) from None
    except OSError as error:
        if error.errno in STORAGE_FULL_ERRNOS:
            msg = (
                f"the disk filled up while unpacking {manifest.archive.name} into {staging} "
                f"({error.strerror}); free some space and try again"
            )
            raise DiskSpaceError(msg) from None
        raise
    state.verify()
    _fsync_tree(staging)
    _log.info(
        "unpacked %s (%d files, %d bytes)", manifest.archive.name, len(state.seen), state.written
    )

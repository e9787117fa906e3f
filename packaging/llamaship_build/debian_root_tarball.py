"""The Debian 11 root as a tarball: exported once, unpacked where debootstrap cannot run.

Debian 11 leaves the mirrors (bullseye-backports already answers 404); a root exported while
it could still be made keeps the build working without debootstrap or the network. The
tarball is named by the root's recipe key and starts with a small manifest naming it; a
`.sha256` file is written beside it. Unpacking checks the sha256 first, then the manifest's
recipe, and refuses any member that would land outside the root (or a device file); every
file is owned by root, as the build that uses it runs as root.
"""

from __future__ import annotations

import io
import json
import logging
import os
import stat
import tarfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from llamaship_build.errors import BuildError
from llamaship_contract.hashing import sha256_of

_log = logging.getLogger(__name__)

MANIFEST = ".llamaship-root.json"
COMPLETE = ".llamaship-complete"
FORMAT = 1
ZSTD_LEVEL = 6  # a 1.2 GB root in about a minute on two cores; higher levels gain little
MAX_DOWNLOAD = 4 << 30
DOWNLOAD_SECONDS = 30 * 60
# Top-level entries of a root; anything else there is a bind mount point of the build's.
_TOP = frozenset(
    {
        *("bin", "boot", "dev", "etc", "home", "lib", "lib32", "lib64", "libx32", "media"),
        *("mnt", "opt", "proc", "root", "run", "sbin", "srv", "sys", "tmp", "usr", "var"),
    }
)
# Directories kept empty: kernel and scratch mounts, build caches, downloaded packages.
_EMPTIED = frozenset({"dev", "proc", "sys", "tmp", "var/tmp", "var/cache/llamaship", "root/.cache"})
_CHUNK = 1 << 20


def tarball_name(recipe_name: str) -> str:
    """The file name of a root's tarball, from the root's directory name (`bullseye-<key>`)."""
    return f"llamaship-root-{recipe_name}.tar.zst"


def _skipped(relative: str) -> bool:
    if relative.startswith("var/cache/apt/"):
        return relative.endswith((".deb", ".bin"))
    return relative in (COMPLETE, MANIFEST)


def _entries(root: Path, mounts: frozenset[str]) -> Iterator[tuple[Path, str]]:
    """(path, name in the tarball) for the root's files, sorted, parents first."""
    top = sorted(os.scandir(root), key=lambda e: e.name, reverse=True)
    stack = [entry for entry in top if entry.name in _TOP]
    while stack:
        entry = stack.pop()
        path = Path(entry.path)
        relative = path.relative_to(root).as_posix()
        kind = entry.stat(follow_symlinks=False).st_mode
        if _skipped(relative) or not (
            stat.S_ISDIR(kind) or stat.S_ISREG(kind) or stat.S_ISLNK(kind)
        ):
            continue  # sockets, pipes and devices are made by whatever runs, not kept
        yield path, relative
        if (
            entry.is_dir(follow_symlinks=False)
            and relative not in _EMPTIED
            and entry.path not in mounts
        ):
            stack.extend(sorted(os.scandir(path), key=lambda e: e.name, reverse=True))


def export_root(
    root: Path, out_dir: Path, *, recipe: str, name: str, mounts: frozenset[str] = frozenset()
) -> tuple[Path, str]:
    """Write `root` as `out_dir/<tarball_name(name)>` and its `.sha256`; (path, sha256).

    `mounts` are paths mounted inside the root now (a build using it): they are left out.
    """
    root = root.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / tarball_name(name)
    partial = target.with_name(target.name + ".partial")
    manifest = json.dumps({"format": FORMAT, "recipe": recipe, "name": name}).encode()
    try:
        _write(partial, root, mounts, manifest)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    sha256 = sha256_of(partial)
    os.replace(partial, target)
    target.with_name(target.name + ".sha256").write_text(f"{sha256}  {target.name}\n")
    return target, sha256


def _write(partial: Path, root: Path, mounts: frozenset[str], manifest: bytes) -> None:
    import zstandard

    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1)
    with (
        partial.open("wb") as raw,
        compressor.stream_writer(raw, closefd=False) as out,
        tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar,
    ):
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mtime, info.mode = len(manifest), int(time.time()), 0o644
        tar.addfile(info, io.BytesIO(manifest))
        for path, relative in _entries(root, mounts):
            if str(path) in mounts:  # the empty directory under the mount (/proc, /dev)
                member = tarfile.TarInfo(relative)
                member.type, member.mode, member.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
            else:
                member = tar.gettarinfo(str(path), relative)
            member.uid = member.gid = 0
            member.uname = member.gname = "root"
            if member.isfile():
                with path.open("rb") as data:
                    tar.addfile(member, data)
            else:
                tar.addfile(member)


def fetch_tarball(source: str, into: Path) -> Path:
    """The tarball at `source`: a path as is, an https URL downloaded into `into` (bounded)."""
    if not source.startswith("https://"):
        path = Path(source).expanduser()
        if not path.is_file():
            msg = f"LLAMASHIP_BUILD_DEBIAN_ROOT_TARBALL={source} is not a file: export one with "
            msg += "`python -m llamaship_build root-export DIR` or name an existing one"
            raise BuildError(msg)
        return path
    target = into / "root.tar.zst"
    deadline = time.monotonic() + DOWNLOAD_SECONDS
    _log.info("downloading the Debian 11 root from %s", source)
    done = 0
    try:
        with urllib.request.urlopen(source, timeout=60) as response, target.open("wb") as out:
            while chunk := response.read(_CHUNK):
                done += len(chunk)
                if done > MAX_DOWNLOAD or time.monotonic() > deadline:
                    msg = f"{source} is over {MAX_DOWNLOAD >> 30} GiB or took over 30 minutes"
                    raise BuildError(msg)
                out.write(chunk)
    except OSError as error:  # URLError, HTTPError, timeouts
        msg = f"cannot download LLAMASHIP_BUILD_DEBIAN_ROOT_TARBALL={source}: {error}"
        raise BuildError(msg) from None
    return target


def expected_sha256(tarball: Path, configured: str | None) -> str:
    """The sha256 `tarball` must have: `configured`, else the `.sha256` file beside it."""
    if configured is not None:
        return configured
    beside = tarball.with_name(tarball.name + ".sha256")
    try:
        return beside.read_text(encoding="utf-8").split()[0].lower()
    except (OSError, IndexError):
        msg = (
            f"{tarball} has no sha256: set LLAMASHIP_BUILD_DEBIAN_ROOT_SHA256, or keep the "
            f"{beside.name} that root-export wrote beside it"
        )
        raise BuildError(msg) from None


def _inside(dest: Path, relative: str) -> bool:
    resolved = os.path.realpath(dest / relative)
    return resolved == str(dest) or resolved.startswith(str(dest) + os.sep)


def member_filter(manifest: str) -> Callable[[tarfile.TarInfo, str], tarfile.TarInfo | None]:
    """The extraction filter: tarfile's `tar` filter's path checks, hard links kept inside,
    no device files, owner root; modes kept (but setuid/setgid); `manifest` skipped."""

    def check(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
        if member.name == manifest:
            return None
        if member.ischr() or member.isblk() or member.isfifo():
            msg = f"the root tarball holds a device file, {member.name}: refused"
            raise BuildError(msg)
        try:
            tarfile.tar_filter(member, dest)
        except tarfile.FilterError as error:
            msg = f"the root tarball's {member.name} is refused: {error}"
            raise BuildError(msg) from None
        link = member.linkname
        if member.islnk() and (Path(link).is_absolute() or not _inside(Path(dest), link)):
            msg = f"the root tarball's {member.name} links outside the root: refused"
            raise BuildError(msg)
        mode = member.mode & ~(stat.S_ISUID | stat.S_ISGID)
        return member.replace(uid=0, gid=0, uname="root", gname="root", mode=mode, deep=False)

    return check


def unpack_root(tarball: Path, target: Path, *, sha256: str, recipe: str) -> None:
    """Unpack `tarball` (of `sha256`, made for `recipe`) into the new directory `target`."""
    import zstandard

    actual = sha256_of(tarball)
    if actual != sha256:
        msg = f"{tarball} has sha256 {actual}, not the expected {sha256}: refused"
        raise BuildError(msg)
    target = target.resolve()
    target.mkdir(parents=True)
    with (
        tarball.open("rb") as raw,
        zstandard.ZstdDecompressor().stream_reader(raw) as data,
        tarfile.open(fileobj=data, mode="r|") as tar,
    ):
        first = tar.next()
        reader = tar.extractfile(first) if first is not None and first.name == MANIFEST else None
        if reader is None:
            msg = f"{tarball} is not a root tarball (no {MANIFEST} first): refused"
            raise BuildError(msg)
        manifest = reader.read(1 << 16)
        try:
            made_for = json.loads(manifest)["recipe"]
        except (ValueError, TypeError, KeyError):
            made_for = "unknown"
        if made_for != recipe:
            msg = (
                f"{tarball} holds the root of recipe {made_for}, this checkout's is {recipe}: "
                "export one from this checkout (`python -m llamaship_build root-export DIR`)"
            )
            raise BuildError(msg)
        tar.extractall(target, filter=member_filter(MANIFEST))
    (target / MANIFEST).write_bytes(manifest)

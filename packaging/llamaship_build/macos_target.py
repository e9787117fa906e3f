"""Every Mach-O file of the macOS bundle runs on the oldest macOS the docs promise.

`python -m llamaship_build.macos_target DIR [--oldest 14.0]` reads each Mach-O's minimum OS
(`LC_BUILD_VERSION`, or the older `LC_VERSION_MIN_MACOSX`), thin or universal, and fails on
any above the promise: a wheel built for a newer macOS (numpy ships one for macOS 14 beside
its macOS 11 one; pip takes the newest the runner accepts) would otherwise raise the floor
unnoticed. Standard library only: the release job runs it after the bundle build.
"""

from __future__ import annotations

import argparse
import struct
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from llamaship_build.errors import BuildError

# The promise in docs/platforms.md; the workflows set MACOSX_DEPLOYMENT_TARGET to it.
OLDEST_MACOS = "14.0"
_MH_MAGIC_64 = 0xFEEDFACF
_MH_MAGIC = 0xFEEDFACE
_FAT_MAGIC = 0xCAFEBABE
_FAT_MAGIC_64 = 0xCAFEBABF
_LC_VERSION_MIN_MACOSX = 0x24
_LC_BUILD_VERSION = 0x32


class MacosFloorTooHigh(BuildError):
    """A Mach-O file needs a newer macOS than the bundle promises."""


def _version(packed: int) -> tuple[int, int]:
    """Mach-O's xxxx.yy.zz nibble encoding, as (major, minor)."""
    return packed >> 16, (packed >> 8) & 0xFF


def _thin_minimums(data: bytes, offset: int) -> Iterator[tuple[int, int]]:
    magic = struct.unpack_from("<I", data, offset)[0]
    header = 32 if magic == _MH_MAGIC_64 else 28
    ncmds = struct.unpack_from("<I", data, offset + 16)[0]
    position = offset + header
    for _ in range(ncmds):
        cmd, size = struct.unpack_from("<II", data, position)
        if cmd == _LC_BUILD_VERSION:
            yield _version(struct.unpack_from("<I", data, position + 12)[0])
        elif cmd == _LC_VERSION_MIN_MACOSX:
            yield _version(struct.unpack_from("<I", data, position + 8)[0])
        if size < 8:
            msg = "a Mach-O load command is shorter than its header"
            raise ValueError(msg)
        position += size


def minimum_macos(data: bytes) -> tuple[int, int] | None:
    """The highest minimum macOS among the slices of a Mach-O file; None if not Mach-O."""
    if len(data) < 8:
        return None
    offsets: list[int] = []
    big = struct.unpack_from(">I", data)[0]
    if big in (_FAT_MAGIC, _FAT_MAGIC_64):
        count = struct.unpack_from(">I", data, 4)[0]
        entry = 32 if big == _FAT_MAGIC_64 else 20
        for index in range(count):
            base = 8 + index * entry
            offsets.append(
                struct.unpack_from(">Q", data, base + 8)[0]
                if big == _FAT_MAGIC_64
                else struct.unpack_from(">I", data, base + 8)[0]
            )
    elif struct.unpack_from("<I", data)[0] in (_MH_MAGIC_64, _MH_MAGIC):
        offsets.append(0)
    else:
        return None
    found = [version for offset in offsets for version in _thin_minimums(data, offset)]
    return max(found) if found else None


def too_new(root: Path, oldest: str) -> list[str]:
    """`path: needs macOS X.Y` for every Mach-O below `root` whose minimum is above `oldest`."""
    major, _, minor = oldest.partition(".")
    limit = (int(major), int(minor or 0))
    found = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        try:
            minimum = minimum_macos(path.read_bytes())
        except (ValueError, struct.error):
            found.append(f"{path.relative_to(root)}: not a readable Mach-O file")
            continue
        if minimum is not None and minimum > limit:
            found.append(f"{path.relative_to(root)}: needs macOS {minimum[0]}.{minimum[1]}")
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llamaship_build.macos_target")
    parser.add_argument("root", type=Path, help="the built bundle (dist/backend)")
    parser.add_argument("--oldest", default=OLDEST_MACOS, help="the promised oldest macOS")
    args = parser.parse_args(argv)
    problems = too_new(args.root, args.oldest)
    if problems:
        error = MacosFloorTooHigh(
            f"{len(problems)} files of {args.root} need a newer macOS than {args.oldest} "
            "(docs/platforms.md):\n  " + "\n  ".join(problems) + "\nbuild them with "
            f"MACOSX_DEPLOYMENT_TARGET={args.oldest}, or take the older wheel"
        )
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    print(f"every Mach-O file in {args.root} runs on macOS {args.oldest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

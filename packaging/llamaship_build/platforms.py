"""What differs between the operating systems a bundle is built for."""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass

from llamaship_build.archive import SUFFIXES
from llamaship_build.errors import BuildError


@dataclass(frozen=True)
class TargetPlatform:
    """Per-OS facts of the bundle: library names, archive format, whether to strip ELF files.

    Archives: xz -9 for Linux and macOS, zip for Windows (what Explorer opens). Measured on the
    Linux bundle built in the Debian 11 root (110 MB tar): xz -9 30.5 MB, unpacks in 1.5 s;
    zstd -19 32.8 MB (-22: 32.4 MB), 0.2-0.4 s. Only xz meets the 32 MB target, and 1.5 s is
    small beside a download (docs/benchmarks.md, `nox -s bench`).
    """

    name: str
    # llama_cpp/lib file patterns to bundle: one copy per library, under the name llama_cpp
    # loads (libllama) or libllama links against (its DT_NEEDED sonames), plus the backends.
    llama_libraries: tuple[str, ...]
    archive_format: str
    strip: bool
    # Libraries every system of this OS provides, left out of the bundle (the manylinux
    # policy's view): the system's libstdc++ then serves the bundle and an overlay built with a
    # newer compiler alike, instead of the bundle's older copy shadowing it.
    system_libraries: tuple[str, ...] = ()

    def tag(self, machine: str | None = None) -> str:
        """`<os>-<machine>`, unique per release asset: linux-x86_64, windows-amd64, macos-arm64."""
        return f"{self.name}-{(machine or platform.machine()).lower()}"

    def archive_suffix(self) -> str:
        return SUFFIXES[self.archive_format]


PLATFORMS = {
    "linux": TargetPlatform(
        "linux",
        ("libllama.so", "libggml.so.0", "libggml-base.so.0", "libggml-cpu-*.so"),
        "xz",
        strip=True,
        system_libraries=("libgcc_s.so.1", "libstdc++.so.6"),
    ),
    "win32": TargetPlatform(
        "windows", ("llama.dll", "ggml.dll", "ggml-base.dll", "ggml-cpu-*.dll"), "zip", strip=False
    ),
    "darwin": TargetPlatform(
        "macos",
        ("libllama.dylib", "libggml.0.dylib", "libggml-base.0.dylib", "libggml-*.so"),
        "xz",
        strip=False,
    ),
}


def current(system: str | None = None) -> TargetPlatform:
    """The target for `system` (a `sys.platform` value; default: this machine's)."""
    system = system or sys.platform
    key = "linux" if system.startswith("linux") else system
    try:
        return PLATFORMS[key]
    except KeyError:
        msg = f"cannot build a bundle on {system}: supported are linux, win32, darwin"
        raise BuildError(msg) from None

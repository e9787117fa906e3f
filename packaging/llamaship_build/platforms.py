"""What differs between the operating systems a bundle is built for."""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass

from llamaship_build.errors import BuildError


@dataclass(frozen=True)
class TargetPlatform:
    """Per-OS facts of the bundle: library names, archive format, whether to strip ELF files."""

    name: str
    # llama_cpp/lib file patterns to bundle: one copy per library, under the name llama_cpp
    # loads (libllama) or libllama links against (its DT_NEEDED sonames), plus the backends.
    llama_libraries: tuple[str, ...]
    archive_format: str
    strip: bool

    def tag(self) -> str:
        return f"{self.name}-{platform.machine().lower()}"

    def archive_suffix(self) -> str:
        return ".zip" if self.archive_format == "zip" else ".tar.gz"


PLATFORMS = {
    "linux": TargetPlatform(
        "linux",
        ("libllama.so", "libggml.so.0", "libggml-base.so.0", "libggml-cpu-*.so"),
        "gztar", strip=True),
    "win32": TargetPlatform(
        "windows", ("llama.dll", "ggml.dll", "ggml-base.dll", "ggml-cpu-*.dll"),
        "zip", strip=False),
    "darwin": TargetPlatform(
        "macos",
        ("libllama.dylib", "libggml.0.dylib", "libggml-base.0.dylib", "libggml-*.so"),
        "gztar", strip=False),
}


def current() -> TargetPlatform:
    key = "linux" if sys.platform.startswith("linux") else sys.platform
    try:
        return PLATFORMS[key]
    except KeyError:
        msg = f"cannot build a bundle on {sys.platform}: supported are linux, win32, darwin"
        raise BuildError(msg) from None

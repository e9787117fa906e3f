"""Find the GPU drivers' files the way the loader and the shell would, with stat() only."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

NVML_LIBRARY_LINUX = "libnvidia-ml.so.1"

# Where distributions, WSL and the NVIDIA container toolkit put the driver's libraries; the
# dynamic loader reaches them through /etc/ld.so.cache after LD_LIBRARY_PATH.
_LINUX_LIBRARY_DIRS = (
    "/usr/lib/wsl/lib",
    "/usr/local/nvidia/lib64",
    "/usr/local/nvidia/lib",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/lib64",
    "/lib",
)


def _windows_nvml_candidates(env: Mapping[str, str]) -> list[Path]:
    # The order nvidia-ml-py tries: System32 (DCH drivers), then the old NVSMI folder.
    windir = env.get("WINDIR", "C:/Windows")
    program_files = env.get("ProgramFiles", "C:/Program Files")
    return [
        Path(windir, "System32", "nvml.dll"),
        Path(program_files, "NVIDIA Corporation", "NVSMI", "nvml.dll"),
    ]


def library_candidates(name: str, env: Mapping[str, str]) -> list[Path]:
    """Where the Linux dynamic loader looks for the library `name`, in its order."""
    dirs = [entry for entry in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if entry]
    return [Path(directory, name) for directory in (*dirs, *_LINUX_LIBRARY_DIRS)]


def find_library(name: str, env: Mapping[str, str]) -> Path | None:
    """The library `name` the dynamic loader would open (Windows: from System32), or None."""
    if sys.platform == "win32":
        candidates = [Path(env.get("WINDIR", "C:/Windows"), "System32", name)]
    else:
        candidates = library_candidates(name, env)
    return next((path for path in candidates if path.is_file()), None)


def nvml_library_candidates(env: Mapping[str, str]) -> list[Path]:
    """The paths NVML would be loaded from, in the order the loader tries them."""
    if sys.platform == "win32":
        return _windows_nvml_candidates(env)
    return library_candidates(NVML_LIBRARY_LINUX, env)


def find_nvml_library(env: Mapping[str, str]) -> Path | None:
    """The NVML library the loader would pick, or None when the driver is not installed."""
    return next((path for path in nvml_library_candidates(env) if path.is_file()), None)


def find_executable(name: str, env: Mapping[str, str]) -> Path | None:
    """Like shutil.which, without importing shutil (this runs on every launch)."""
    suffixes = [""]
    if sys.platform == "win32":
        suffixes += env.get("PATHEXT", ".EXE;.BAT;.CMD").lower().split(";")
    for directory in env.get("PATH", "").split(os.pathsep):
        if not directory:
            continue
        for suffix in suffixes:
            candidate = Path(directory, name + suffix)
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
    return None

"""A cheap fingerprint of the NVIDIA driver and GPUs: stat() and small reads, no NVML, no process.

It changes when a driver is installed, removed or updated (its library or nvidia-smi appears,
moves or is replaced, the loader cache is rebuilt, the kernel module reports another version),
when the set of GPUs the kernel module sees changes, and when the caller's versions change.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from llamaship.detect.locate import find_executable, find_nvml_library

Fingerprint = dict[str, object]

_PROC_DRIVER = Path("/proc/driver/nvidia")
_LOADER_CACHE = Path("/etc/ld.so.cache")
_MAX_VERSION_READ = 4096


def file_identity(path: Path | None) -> list[str | int] | None:
    """[path, size, mtime_ns, inode] of the file `path` points to, or None when it is absent."""
    if path is None:
        return None
    try:
        status = path.stat()
    except OSError:
        return None
    return [str(path), status.st_size, status.st_mtime_ns, status.st_ino]


def _kernel_driver_version() -> str | None:
    try:
        with open(_PROC_DRIVER / "version", "rb") as file:
            return file.read(_MAX_VERSION_READ).decode("utf-8", "replace")
    except OSError:
        return None


def _kernel_gpu_entries() -> list[str] | None:
    try:
        return sorted(entry.name for entry in (_PROC_DRIVER / "gpus").iterdir())
    except OSError:
        return None


def compute_fingerprint(
    versions: Mapping[str, str], env: Mapping[str, str] | None = None
) -> Fingerprint:
    """The fingerprint to store beside a detection report (JSON-compatible, compare with ==)."""
    environ = os.environ if env is None else env
    return {
        "platform": sys.platform,
        "kernel_driver": _kernel_driver_version(),
        "kernel_gpus": _kernel_gpu_entries(),
        "nvml_library": file_identity(find_nvml_library(environ)),
        "nvidia_smi": file_identity(find_executable("nvidia-smi", environ)),
        "loader_cache": file_identity(_LOADER_CACHE) if sys.platform != "win32" else None,
        "versions": dict(sorted(versions.items())),
    }

"""A cheap fingerprint of the GPU drivers and GPUs: stat() and small reads, no NVML, no process.

It changes when a driver is installed, removed or updated (its library or nvidia-smi appears,
moves or is replaced, the loader cache is rebuilt, the kernel module reports another version;
the Vulkan loader, a Vulkan driver manifest or the library it names appears, changes or goes),
when the set of GPUs the kernel sees changes, and when the caller's versions change.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from llamaship.detect.locate import find_executable, find_nvml_library
from llamaship.detect.vulkan_files import find_loader, icd_manifests, loader_environment

Fingerprint = dict[str, object]

_PROC_DRIVER = Path("/proc/driver/nvidia")
_LOADER_CACHE = Path("/etc/ld.so.cache")
_DRI_DEVICES = Path("/dev/dri")
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


def _dri_devices() -> list[str] | None:
    """The kernel's GPU device nodes (card0, renderD128, ...): a GPU added or removed."""
    try:
        return sorted(entry.name for entry in _DRI_DEVICES.iterdir())
    except OSError:
        return None


def _vulkan_drivers(env: Mapping[str, str]) -> list[object]:
    return [
        [str(manifest.path), file_identity(manifest.path), file_identity(manifest.library)]
        for manifest in icd_manifests(env)
    ]


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
        "dri_devices": _dri_devices() if sys.platform != "win32" else None,
        "vulkan_loader": file_identity(find_loader(environ)),
        "vulkan_drivers": _vulkan_drivers(environ),
        "vulkan_environment": loader_environment(environ),
        "versions": dict(sorted(versions.items())),
    }

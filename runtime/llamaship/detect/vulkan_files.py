"""The Vulkan loader's files: the loader library, the driver (ICD) manifests it reads and the
driver libraries they name. Found with stat(), directory listings and small reads only.

The fingerprint of the detection cache covers all three, so a "no Vulkan" answer is detected
again once a driver is installed, updated or removed.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from llamaship.detect.locate import find_library

LOADER_LIBRARY = {"win32": "vulkan-1.dll"}.get(sys.platform, "libvulkan.so.1")
# The loader's own overrides: only these lists are read when set (VK_ICD_FILENAMES is the
# older name of VK_DRIVER_FILES), and VK_ADD_DRIVER_FILES adds to whichever list applies.
_OVERRIDES = ("VK_DRIVER_FILES", "VK_ICD_FILENAMES")
_ADDED = "VK_ADD_DRIVER_FILES"
MAX_MANIFEST_BYTES = 64 * 1024
_WINDOWS_DRIVERS_KEY = r"SOFTWARE\Khronos\Vulkan\Drivers"


@dataclass(frozen=True)
class IcdManifest:
    """One driver manifest: the library it names (resolved like the loader), or its problem."""

    path: Path
    library: Path | None = None
    problem: str | None = None


def _split(value: str) -> list[Path]:
    return [Path(entry) for entry in value.split(os.pathsep) if entry]


def _linux_search_dirs(env: Mapping[str, str]) -> list[Path]:
    """The loader's default manifest directories on Linux, in its order."""
    home = env.get("HOME", "")
    config_home = env.get("XDG_CONFIG_HOME") or (f"{home}/.config" if home else "")
    data_home = env.get("XDG_DATA_HOME") or (f"{home}/.local/share" if home else "")
    config_dirs = env.get("XDG_CONFIG_DIRS") or "/etc/xdg"
    data_dirs = env.get("XDG_DATA_DIRS") or "/usr/local/share:/usr/share"
    bases = [
        *([Path(config_home)] if config_home else []),
        *_split(config_dirs),
        Path("/usr/local/etc"),
        Path("/etc"),
        *([Path(data_home)] if data_home else []),
        *_split(data_dirs),
    ]
    return [base / "vulkan" / "icd.d" for base in bases]


def _windows_registry_manifests() -> list[Path]:
    """The manifests the Khronos registry key lists (the value names are their paths)."""
    manifests: list[Path] = []
    if sys.platform == "win32":
        import winreg

        try:
            with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, _WINDOWS_DRIVERS_KEY) as key:
                count = winreg.QueryInfoKey(key)[1]
                manifests = [Path(winreg.EnumValue(key, index)[0]) for index in range(count)]
        except OSError:
            pass  # no key: no driver registered a Vulkan ICD there
    return manifests


def _manifests_in(entry: Path, named: bool) -> list[Path]:
    """The .json files directly in the directory `entry`; else `entry` itself when it was
    named in a VK_* variable (a missing file is reported), else nothing."""
    try:
        return sorted(path for path in entry.iterdir() if path.suffix == ".json")
    except NotADirectoryError:
        return [entry]
    except OSError:
        return [entry] if named else []


def manifest_paths(env: Mapping[str, str]) -> list[Path]:
    """Every driver manifest the Vulkan loader would read with this environment."""
    override = next((env[key] for key in _OVERRIDES if env.get(key)), None)
    named = _split(env.get(_ADDED, ""))
    if override is not None:
        named += _split(override)
        searched = []
    elif sys.platform == "win32":
        named += _windows_registry_manifests()
        searched = []
    else:
        searched = _linux_search_dirs(env)
    return [
        *(path for entry in named for path in _manifests_in(entry, named=True)),
        *(path for entry in searched for path in _manifests_in(entry, named=False)),
    ]


def _library_of(manifest: Path, library_path: str, env: Mapping[str, str]) -> Path | None:
    """Resolve ICD.library_path as the loader does: relative to the manifest when it has a
    directory part, else through the dynamic loader's search."""
    if "/" in library_path or "\\" in library_path:
        path = Path(library_path)
        return path if path.is_absolute() else manifest.parent / path
    return find_library(library_path, env)


def read_manifest(path: Path, env: Mapping[str, str]) -> IcdManifest:
    """The manifest at `path`, read with a bounded read; a bad one says what is wrong."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_MANIFEST_BYTES + 1)
    except OSError as error:
        return IcdManifest(path, problem=f"cannot be read ({error.strerror or error})")
    if len(data) > MAX_MANIFEST_BYTES:
        return IcdManifest(path, problem=f"is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        document = json.loads(data)
    except ValueError as error:
        return IcdManifest(path, problem=f"is not valid JSON ({error})")
    icd = document.get("ICD") if isinstance(document, dict) else None
    library_path = icd.get("library_path") if isinstance(icd, dict) else None
    if not isinstance(library_path, str) or not library_path:
        return IcdManifest(path, problem='has no "ICD": {"library_path": ...}')
    library = _library_of(path, library_path, env)
    if library is not None and not library.exists():
        return IcdManifest(path, library, f"names the driver library {library}, which is missing")
    return IcdManifest(path, library=library)


def icd_manifests(env: Mapping[str, str]) -> list[IcdManifest]:
    """Every driver manifest the loader would read, each with its library or its problem."""
    return [read_manifest(path, env) for path in manifest_paths(env)]


def manifest_problems(manifests: list[IcdManifest]) -> list[str]:
    """One line per manifest the loader will skip, saying which and what to do."""
    return [
        f"Vulkan: the driver manifest {manifest.path} {manifest.problem}: reinstall the driver "
        "that installed it, or remove the file (the Vulkan loader skips it, or fails)"
        for manifest in manifests
        if manifest.problem is not None
    ]


def find_loader(env: Mapping[str, str]) -> Path | None:
    """The Vulkan loader library the system would load, or None when it is not installed."""
    return find_library(LOADER_LIBRARY, env)


def loader_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The loader's environment variables (VK_*): they change which drivers and devices it lists."""
    return {key: value for key, value in sorted(env.items()) if key.startswith("VK_")}

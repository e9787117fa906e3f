"""Load llama.cpp's ggml backends (the CPU variants, an overlay's module) after `import llama_cpp`.

llama-cpp-python built with GGML_BACKEND_DL registers no backend by itself (its issue #2069):
model loading fails with "no backends are loaded" until `ggml_backend_load_all_from_path` runs.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llamaship.launch.activate import Loader, add_dll_directories
from llamaship_contract.errors import LlamashipError

_log = logging.getLogger(__name__)

# The registry lives in libggml; load it under the file name libllama links against, so both
# use one instance (wheels store the same library as several copies under different names).
_GGML_NAMES = {
    "linux": ("libggml.so.0", "libggml.so"),
    "darwin": ("libggml.0.dylib", "libggml.dylib"),
    "win32": ("ggml.dll",),
}


class BackendLoadError(LlamashipError):
    """llama.cpp's backends could not be registered."""


@dataclass(frozen=True)
class LoadedBackends:
    """What ggml registered: backend names, device names, the CPU variant library chosen."""

    lib_dir: Path
    backends: tuple[str, ...]
    devices: tuple[str, ...]
    cpu_library: str | None


_loaded: LoadedBackends | None = None
_MAPS = Path("/proc/self/maps")


def mapped_llama_libraries() -> set[Path]:
    """Paths of the llama.cpp libraries (libllama, libggml*) this process has mapped (Linux)."""
    try:
        maps = _MAPS.read_text()
    except OSError:
        return set()
    paths = {
        Path(line.split(maxsplit=5)[-1])
        for line in maps.splitlines()
        if "/libggml" in line or "/libllama" in line
    }
    return {path for path in paths if path.is_absolute()}


def _mapped_cpu_library() -> str | None:
    """The file name of the CPU backend variant ggml picked (Linux: from the memory map)."""
    names = {path.name for path in mapped_llama_libraries() if path.name.startswith("libggml-cpu-")}
    return min(names) if names else None


def _ggml_library(lib_dir: Path, system: str = sys.platform) -> Path:
    platform = "linux" if system.startswith("linux") else system
    for name in _GGML_NAMES.get(platform, ()):
        candidate = lib_dir / name
        if candidate.is_file():
            return candidate
    msg = f"no ggml library in {lib_dir}: the llama_cpp installation is incomplete; reinstall it"
    raise BackendLoadError(msg)


def _names(
    count: int, get_item: Callable[[int], int], get_name: Callable[[int], bytes]
) -> tuple[str, ...]:
    return tuple(get_name(get_item(index)).decode() for index in range(count))


def load_ggml_backends() -> LoadedBackends:
    """Register every ggml backend shipped beside the imported llama_cpp; idempotent."""
    global _loaded
    if _loaded is not None:
        return _loaded
    import llama_cpp  # the bundle's; an overlay adds its module (GGML_BACKEND_PATH)

    lib_dir = Path(llama_cpp.__file__).resolve().parent / "lib"
    loader = Loader()
    if loader.windows:  # ggml loads its backend DLLs by path; their imports resolve here
        add_dll_directories([lib_dir], loader)
    ggml = ctypes.CDLL(os.fspath(_ggml_library(lib_dir, loader.system)))
    ggml.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
    ggml.ggml_backend_load_all_from_path.restype = None
    for getter in (ggml.ggml_backend_reg_get, ggml.ggml_backend_dev_get):
        getter.argtypes = [ctypes.c_size_t]
        getter.restype = ctypes.c_void_p
    for namer in (ggml.ggml_backend_reg_name, ggml.ggml_backend_dev_name):
        namer.argtypes = [ctypes.c_void_p]
        namer.restype = ctypes.c_char_p
    for counter in (ggml.ggml_backend_reg_count, ggml.ggml_backend_dev_count):
        counter.restype = ctypes.c_size_t

    ggml.ggml_backend_load_all_from_path(os.fsencode(lib_dir))
    backends = _names(
        ggml.ggml_backend_reg_count(), ggml.ggml_backend_reg_get, ggml.ggml_backend_reg_name
    )
    devices = _names(
        ggml.ggml_backend_dev_count(), ggml.ggml_backend_dev_get, ggml.ggml_backend_dev_name
    )
    if not backends:
        msg = (
            f"llama.cpp registered no backend from {lib_dir}: the CPU backend libraries "
            "(libggml-cpu-*) are missing or none fits this CPU; reinstall the application"
        )
        raise BackendLoadError(msg)
    _log.debug("ggml backends %s, devices %s from %s", backends, devices, lib_dir)
    _loaded = LoadedBackends(
        lib_dir=lib_dir, backends=backends, devices=devices, cpu_library=_mapped_cpu_library()
    )
    return _loaded

"""Make an installed CUDA overlay's llama_cpp win the import, before anything imports it.

Linux: the CUDA runtime libraries the overlay carries are preloaded with RTLD_GLOBAL, so
libggml-cuda finds them by soname. Windows: the runtime's folder and the overlay's
`llama_cpp/lib` are added with `os.add_dll_directory` (never by editing PATH, which Python's
DLL loading has ignored since 3.8 and which child processes would inherit); a DLL loaded by
full path finds its neighbours in its own folder. Then the overlay directory goes first on
sys.path (in a PyInstaller bundle a sys.path entry placed before the first import beats the
frozen copy: tests check this in a real bundle).

The OS is a parameter (`Loader`), so tests run every branch on any machine.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llamaship_contract.errors import LlamashipError

# Load order: each library's dependencies first.
_PRELOAD_ORDER = ("libcudart", "libcublasLt", "libcublas")
# The overlay's own ggml, loaded by path before libllama: the dynamic loader then resolves
# libllama's DT_NEEDED sonames to these copies, not to the CPU build's copies that a
# PyInstaller bundle puts on LD_LIBRARY_PATH (searched before libllama's $ORIGIN RUNPATH).
_GGML_SONAMES = ("libggml-base.so.0", "libggml.so.0")


class ActivationError(LlamashipError):
    """The overlay could not be put in place of the CPU build."""


def _add_dll_directory(path: str) -> object:
    return os.add_dll_directory(path)  # type: ignore[attr-defined,unused-ignore]  # Windows


def _load(path: str, mode: int) -> object:
    return ctypes.CDLL(path, mode=mode)


@dataclass(frozen=True)
class Loader:
    """How this process loads native libraries: the OS (a `sys.platform` value) and the two
    calls that change what the loader finds (tests inject recorders)."""

    system: str = sys.platform
    add_dll_directory: Callable[[str], object] = _add_dll_directory
    load: Callable[[str, int], object] = _load

    @property
    def windows(self) -> bool:
        return self.system == "win32"


# The DLL directories added on Windows (their handles: closing one removes the directory).
_dll_directories: dict[str, object] = {}


def add_dll_directories(directories: list[Path], loader: Loader) -> list[str]:
    """Windows: add each directory to this process's DLL search path once; returns them."""
    added = []
    for directory in directories:
        key = os.fspath(directory)
        if key not in _dll_directories:
            _dll_directories[key] = loader.add_dll_directory(key)
        added.append(key)
    return added


def _preload_order(lib_dir: Path) -> list[Path]:
    libraries = sorted(path for path in lib_dir.iterdir() if ".so" in path.name)

    def rank(path: Path) -> int:
        stem = path.name.split(".so")[0]
        return _PRELOAD_ORDER.index(stem) if stem in _PRELOAD_ORDER else len(_PRELOAD_ORDER)

    return sorted(libraries, key=rank)


def preload_runtime_libraries(runtime_lib_dir: Path, loader: Loader | None = None) -> list[str]:
    """Load the CUDA runtime libraries the overlay carries; returns their names (none on
    Windows, where their folder joins the DLL search path instead)."""
    loader = loader or Loader()
    if not runtime_lib_dir.is_dir():
        msg = f"the overlay's CUDA runtime folder {runtime_lib_dir} is missing: reinstall it"
        raise ActivationError(msg)
    if loader.windows:
        add_dll_directories([runtime_lib_dir], loader)
        return []
    loaded = []
    for library in _preload_order(runtime_lib_dir):
        try:
            loader.load(os.fspath(library), ctypes.RTLD_GLOBAL)
        except OSError as error:
            msg = f"cannot load {library.name} from the overlay: {error}"
            raise ActivationError(msg) from None
        loaded.append(library.name)
    return loaded


def _preload_own_ggml(lib_dir: Path, loader: Loader) -> None:
    if loader.windows:  # the overlay's llama.dll finds ggml.dll in its own folder first
        add_dll_directories([lib_dir], loader)
        return
    for name in _GGML_SONAMES:
        library = lib_dir / name
        if library.is_file():
            try:
                loader.load(os.fspath(library), ctypes.DEFAULT_MODE)
            except OSError as error:
                msg = f"cannot load {name} from the overlay: {error}"
                raise ActivationError(msg) from None


def activate(llama_dir: Path, runtime_lib_dir: Path, loader: Loader | None = None) -> None:
    """Put the overlay first; must run before the first `import llama_cpp`."""
    loader = loader or Loader()
    if "llama_cpp" in sys.modules:
        msg = "llama_cpp was imported before the overlay could be activated (a bug in the caller)"
        raise ActivationError(msg)
    if not (llama_dir / "llama_cpp" / "__init__.py").is_file():
        msg = f"the overlay at {llama_dir} has no llama_cpp package: reinstall it"
        raise ActivationError(msg)
    preload_runtime_libraries(runtime_lib_dir, loader)
    _preload_own_ggml(llama_dir / "llama_cpp" / "lib", loader)
    sys.path.insert(0, os.fspath(llama_dir))
    importlib.invalidate_caches()


def deactivate(llama_dir: Path) -> None:
    """Undo `activate` after a failed import, so the CPU build can be imported instead."""
    entry = os.fspath(llama_dir)
    while entry in sys.path:
        sys.path.remove(entry)
    for directory in [key for key in _dll_directories if Path(key).is_relative_to(llama_dir)]:
        close = getattr(_dll_directories.pop(directory), "close", None)
        if close is not None:
            close()
    for name in [
        name for name in sys.modules if name == "llama_cpp" or name.startswith("llama_cpp.")
    ]:
        del sys.modules[name]
    importlib.invalidate_caches()


def imported_from(llama_dir: Path) -> bool:
    """Whether the imported llama_cpp is the overlay's copy."""
    module = sys.modules.get("llama_cpp")
    origin = Path(getattr(module, "__file__", "") or "").resolve()
    return origin.is_relative_to(llama_dir.resolve())


def foreign_libraries(llama_dir: Path) -> list[Path]:
    """llama.cpp libraries mapped into this process from outside the overlay (should be none)."""
    from llamaship.native import mapped_llama_libraries

    root = llama_dir.resolve()
    return sorted(
        path for path in mapped_llama_libraries() if not path.resolve().is_relative_to(root)
    )

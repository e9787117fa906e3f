"""Activate an installed CUDA overlay: the bundle's own ggml loads its backend module.

The CUDA runtime libraries of the `cuda-runtime` layer are loaded first. Linux: with
RTLD_GLOBAL, so `libggml-cuda.so` (no RUNPATH) finds them by soname. Windows: their folder is
added with `os.add_dll_directory` and each is loaded by full path, so ggml's `LoadLibrary` of
`ggml-cuda.dll` finds them already loaded. Then the environment names the module
(`GGML_BACKEND_PATH`, honoured by `ggml_backend_load_all_from_path`) and puts the runtime's
folder first on `LD_LIBRARY_PATH` (`PATH` on Windows): every llama.cpp process of the launch
inherits both (the native fit tool, the probe and measurement children).

The OS is a parameter (`Loader`), and so is the environment, so tests run every branch on any
machine.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

from llamaship.launch.launch_env import BACKEND_PATH, set_for_launch
from llamaship_contract.errors import LlamashipError

# Load order: each library's dependencies first (libcudart.so.13, cublasLt64_13.dll, ...).
_PRELOAD_ORDER = ("cudart", "cublasLt", "cublas")
_LIBRARY_STEM = re.compile(r"^(?:lib)?([A-Za-z]+)")


class ActivationError(LlamashipError):
    """The overlay's CUDA runtime could not be loaded, or its module is missing."""


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

    @property
    def search_variable(self) -> str:
        """The variable a child process's loader searches: PATH on Windows."""
        return "PATH" if self.windows else "LD_LIBRARY_PATH"

    @property
    def path_separator(self) -> str:
        return ";" if self.windows else ":"


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


def _is_library(name: str, loader: Loader) -> bool:
    return name.lower().endswith(".dll") if loader.windows else ".so" in name


def _preload_order(lib_dir: Path, loader: Loader) -> list[Path]:
    libraries = sorted(path for path in lib_dir.iterdir() if _is_library(path.name, loader))

    def rank(path: Path) -> int:
        match = _LIBRARY_STEM.match(path.name)
        stem = match.group(1) if match else ""
        return _PRELOAD_ORDER.index(stem) if stem in _PRELOAD_ORDER else len(_PRELOAD_ORDER)

    return sorted(libraries, key=rank)


def preload_runtime_libraries(runtime_lib_dir: Path, loader: Loader | None = None) -> list[str]:
    """Load the CUDA runtime libraries the overlay carries (dependencies first); returns their
    names. On Windows their folder joins the DLL search path first."""
    loader = loader or Loader()
    if not runtime_lib_dir.is_dir():
        msg = f"the overlay's CUDA runtime folder {runtime_lib_dir} is missing: reinstall it"
        raise ActivationError(msg)
    if loader.windows:
        add_dll_directories([runtime_lib_dir], loader)
    mode = 0 if loader.windows else ctypes.RTLD_GLOBAL
    loaded = []
    for library in _preload_order(runtime_lib_dir, loader):
        try:
            loader.load(os.fspath(library), mode)
        except OSError as error:
            msg = f"cannot load {library.name} from the overlay: {error}"
            raise ActivationError(msg) from None
        loaded.append(library.name)
    return loaded


def cuda_environment(
    module: Path, runtime_lib_dir: Path, base: Mapping[str, str], loader: Loader | None = None
) -> dict[str, str]:
    """The variables a process of the launch needs to load `module`: `GGML_BACKEND_PATH`, and
    the runtime's folder first on the loader's search path of `base` (once)."""
    loader = loader or Loader()
    folder = os.fspath(runtime_lib_dir)
    variable = loader.search_variable
    others = [
        entry
        for entry in base.get(variable, "").split(loader.path_separator)
        if entry and entry != folder
    ]
    return {
        BACKEND_PATH: os.fspath(module),
        variable: loader.path_separator.join([folder, *others]),
    }


def activate(
    module: Path,
    runtime_lib_dir: Path,
    loader: Loader | None = None,
    environ: MutableMapping[str, str] | None = None,
) -> None:
    """Preload the overlay's CUDA runtime, then name `module` and the runtime's folder in
    `environ` (default: this process's); before the first `load_ggml_backends`."""
    loader = loader or Loader()
    environment = os.environ if environ is None else environ
    if not module.is_file():
        msg = f"the overlay's CUDA backend module {module} is missing: reinstall the overlay"
        raise ActivationError(msg)
    preload_runtime_libraries(runtime_lib_dir, loader)
    set_for_launch(cuda_environment(module, runtime_lib_dir, environment, loader), environment)


def deactivate(
    module: Path,
    runtime_lib_dir: Path,
    loader: Loader | None = None,
    environ: MutableMapping[str, str] | None = None,
) -> None:
    """Undo `activate` on a fall-back to the CPU build: the module and the runtime's folder
    leave the environment (and, on Windows, the DLL search path)."""
    loader = loader or Loader()
    environment = os.environ if environ is None else environ
    if environment.get(BACKEND_PATH) == os.fspath(module):
        del environment[BACKEND_PATH]
    variable, folder = loader.search_variable, os.fspath(runtime_lib_dir)
    entries = environment.get(variable, "").split(loader.path_separator)
    kept = [entry for entry in entries if entry and entry != folder]
    if kept:
        environment[variable] = loader.path_separator.join(kept)
    else:
        environment.pop(variable, None)
    close = getattr(_dll_directories.pop(folder, None), "close", None)
    if close is not None:
        close()

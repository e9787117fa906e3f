"""`probe`: the child process of `llamaship.launch.probe` (not for use by hand).

A CUDA overlay (`--llama-dir`, `--runtime-lib-dir`) replaces the bundle's llama_cpp; a backend
module (`--backend-module`, a Vulkan overlay) is loaded by the bundle's own ggml, through
GGML_BACKEND_PATH in this process's environment (the parent sets it, as the launch will).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llamaship_contract.errors import LlamashipError

if TYPE_CHECKING:
    from llamaship_contract.launch import BackendDevice


class ModuleNotLoaded(LlamashipError):
    """The backend module is not the one ggml loaded, or registered no device."""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "probe", help="(internal) load an overlay in a child process and report what it saw"
    )
    parser.add_argument("--llama-dir", type=Path)
    parser.add_argument("--runtime-lib-dir", type=Path)
    parser.add_argument("--backend-module", type=Path)


def run(args: argparse.Namespace) -> int:
    from llamaship.fit.backoff import LlamaLog
    from llamaship.launch.activate import (
        ActivationError,
        activate,
        foreign_libraries,
        imported_from,
    )
    from llamaship.launch.probe import backend_devices, cuda_failure
    from llamaship.native import _ggml_library, load_ggml_backends, mapped_llama_libraries
    from llamaship_contract.document import dump_document
    from llamaship_contract.launch import ProbeResult

    module: Path | None = args.backend_module
    if module is None:
        activate(args.llama_dir, args.runtime_lib_dir)
    import llama_cpp

    if module is None and not imported_from(args.llama_dir):
        msg = f"llama_cpp was imported from {llama_cpp.__file__}, not from the overlay"
        raise ActivationError(msg)
    LlamaLog.install()
    with LlamaLog.captured() as log_lines:
        loaded = load_ggml_backends()
    gpu_devices = backend_devices(_ggml_library(loaded.lib_dir))
    if module is not None:
        _check_module(module, os.environ.get("GGML_BACKEND_PATH"), gpu_devices, log_lines)
        cuda_error = None
    else:
        cuda_error = (
            None
            if any(device.backend == "CUDA" for device in gpu_devices)
            else cuda_failure(loaded.lib_dir, log_lines)
        )
        foreign = foreign_libraries(args.llama_dir)
        if foreign:
            msg = f"the overlay's llama_cpp also loaded libraries from outside it: {foreign}"
            raise ActivationError(msg)
    result = ProbeResult(
        llama_cpp_version=llama_cpp.__version__,
        llama_cpp_path=llama_cpp.__file__,
        backends=loaded.backends,
        devices=loaded.devices,
        gpu_devices=gpu_devices,
        cuda_error=cuda_error,
        libraries=tuple(sorted(map(str, mapped_llama_libraries()))),
    )
    sys.stdout.flush()
    sys.stdout.buffer.write(dump_document(result) + b"\n")  # the last line, parsed by the parent
    sys.stdout.buffer.flush()
    return 0


def _check_module(
    module: Path,
    backend_path: str | None,
    gpu_devices: tuple[BackendDevice, ...],
    log_lines: list[str],
) -> None:
    """The module ggml loaded is `module`, and its backend registered at least one device."""
    if backend_path is None or Path(backend_path).resolve() != module.resolve():
        msg = f"GGML_BACKEND_PATH does not name {module}: the launch would not load it"
        raise ModuleNotLoaded(msg)
    if not gpu_devices:
        said = [line.strip() for line in log_lines if "vulkan" in line.lower()]
        why = said[-1] if said else "no device visible to it (GGML_VK_VISIBLE_DEVICES)"
        msg = f"the backend module {module.name} registered no device: {why}"
        raise ModuleNotLoaded(msg)

"""`probe`: the child process of `llamaship.launch.probe` (not for use by hand).

The bundle's own llama.cpp loads the overlay's backend module (`--backend-module`), named by
GGML_BACKEND_PATH in this process's environment (the parent sets it, as the launch will). A
CUDA overlay (`--cuda-runtime`, its runtime library folder) is activated as the launch does
it, and the CUDA devices it registered are reported; a Vulkan module must register one.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llamaship_contract.launch import BackendDevice


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "probe", help="(internal) load an overlay in a child process and report what it saw"
    )
    parser.add_argument("--backend-module", type=Path, required=True)
    parser.add_argument("--cuda-runtime", type=Path, help="a CUDA overlay's runtime libraries")


def run(args: argparse.Namespace) -> int:
    from llamaship.fit.backoff import LlamaLog
    from llamaship.launch.activate import activate
    from llamaship.launch.launch_env import BACKEND_PATH
    from llamaship.launch.probe import backend_devices, cuda_failure
    from llamaship.native import _ggml_library, load_ggml_backends, mapped_llama_libraries
    from llamaship_contract.document import dump_document
    from llamaship_contract.launch import ProbeResult

    module: Path = args.backend_module
    if args.cuda_runtime is not None:
        activate(module, args.cuda_runtime)
    _check_backend_path(module, os.environ.get(BACKEND_PATH))
    import llama_cpp

    LlamaLog.install()
    with LlamaLog.captured() as log_lines:
        loaded = load_ggml_backends()
    gpu_devices = backend_devices(_ggml_library(loaded.lib_dir))
    cuda_error = None
    if args.cuda_runtime is not None:
        if not any(device.backend == "CUDA" for device in gpu_devices):
            cuda_error = cuda_failure(module, loaded.backends, log_lines)
    else:
        _check_devices(module, gpu_devices, log_lines)
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


def _check_backend_path(module: Path, backend_path: str | None) -> None:
    """GGML_BACKEND_PATH names `module`, as the launch will set it."""
    from llamaship.launch.probe import ModuleNotLoaded

    if backend_path is None or Path(backend_path).resolve() != module.resolve():
        msg = f"GGML_BACKEND_PATH does not name {module}: the launch would not load it"
        raise ModuleNotLoaded(msg)


def _check_devices(
    module: Path, gpu_devices: tuple[BackendDevice, ...], log_lines: list[str]
) -> None:
    """The Vulkan module registered at least one device."""
    from llamaship.launch.probe import ModuleNotLoaded

    if not gpu_devices:
        said = [line.strip() for line in log_lines if "vulkan" in line.lower()]
        why = said[-1] if said else "no device visible to it (GGML_VK_VISIBLE_DEVICES)"
        msg = f"the backend module {module.name} registered no device: {why}"
        raise ModuleNotLoaded(msg)

"""`probe`: the child process of `llamaship.launch.probe.run_probe` (not for use by hand)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "probe", help="(internal) load an overlay in a child process and report what it saw"
    )
    parser.add_argument("--llama-dir", type=Path, required=True)
    parser.add_argument("--runtime-lib-dir", type=Path, required=True)


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

    activate(args.llama_dir, args.runtime_lib_dir)
    import llama_cpp

    if not imported_from(args.llama_dir):
        msg = f"llama_cpp was imported from {llama_cpp.__file__}, not from the overlay"
        raise ActivationError(msg)
    LlamaLog.install()
    with LlamaLog.captured() as log_lines:
        loaded = load_ggml_backends()
    gpu_devices = backend_devices(_ggml_library(loaded.lib_dir))
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
    sys.stdout.buffer.write(dump_document(result) + b"\n")  # the last line, parsed by `run_probe`
    sys.stdout.buffer.flush()
    return 0

"""`probe`: the child process of `llamaship.probe.run_probe` (not meant to be run by hand)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "probe", help="(internal) load an overlay in a child process and report what it saw")
    parser.add_argument("--llama-dir", type=Path, required=True)
    parser.add_argument("--runtime-lib-dir", type=Path, required=True)


def run(args: argparse.Namespace) -> int:
    from llamaship.activate import ActivationError, activate, foreign_libraries, imported_from
    from llamaship.native import load_ggml_backends

    activate(args.llama_dir, args.runtime_lib_dir)
    import llama_cpp

    if not imported_from(args.llama_dir):
        msg = f"llama_cpp was imported from {llama_cpp.__file__}, not from the overlay"
        raise ActivationError(msg)
    loaded = load_ggml_backends()
    foreign = foreign_libraries(args.llama_dir)
    if foreign:
        msg = f"the overlay's llama_cpp also loaded libraries from outside it: {foreign}"
        raise ActivationError(msg)
    print(json.dumps({"llama_cpp_version": llama_cpp.__version__,
                      "llama_cpp_path": llama_cpp.__file__,
                      "backends": loaded.backends, "devices": loaded.devices}))
    return 0

"""The `llamaship` command (also the bundle's `backend` executable)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from llamaship.errors import LlamashipError

# Each command module exposes `add_parser(subparsers)` and `run(args) -> int`;
# they are imported only when chosen, so `backend detect` never imports the web stack.
_COMMANDS = {
    "serve": "llamaship.cli_serve",
    "detect": "llamaship.cli_detect",
    "overlay": "llamaship.cli_overlay",
    "keys": "llamaship.cli_keys",
    "probe": "llamaship.cli_probe",
}
_DEFAULT_COMMAND = "serve"


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="llamaship: llama.cpp backend loader")
    parser.add_argument("--env-file", help="read configuration from this .env file")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in _COMMANDS.items():
        module = importlib.import_module(module_name)
        module.add_parser(subparsers)
        subparsers.choices[name].set_defaults(_module=module_name)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "llamaship") -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not any(arg in _COMMANDS for arg in args_list) and not {"-h", "--help"} & set(args_list):
        args_list.insert(0, _DEFAULT_COMMAND)
    parser = build_parser(prog)
    args = parser.parse_args(args_list)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args))
    except LlamashipError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return error.exit_code


def backend_main() -> int:
    """Entry point of the frozen bundle: the same commands, named `backend`."""
    return main(prog="backend")

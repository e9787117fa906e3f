"""`python -m llamaship_build COMMAND`: the build steps the nox sessions call.

The commands live in groups (`cli_build`, `cli_release`, `cli_checks`); this module parses
the command line and turns a build error into one line and its exit status.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from llamaship_build import cli_build, cli_checks, cli_release, cli_vulkan
from llamaship_build.project import Project
from llamaship_contract.errors import LlamashipError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llamaship_build")
    commands = parser.add_subparsers(dest="command", required=True)
    for group in (cli_build, cli_release, cli_checks, cli_vulkan):
        group.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="llamaship_build: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    try:
        return int(args.handler(args, Project.here()))
    except LlamashipError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    raise SystemExit(main())

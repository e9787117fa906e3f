"""`python -m llamaship_build.lock_command [--check] [--upgrade]`: compile or check the locks.

The lock step's own entry point: it imports only the standard library and `locks`, so it runs
from the tools venv (nox + uv), where the build's other dependencies (jinja2, httpx, ...) are
not installed. `python -m llamaship_build lock` delegates here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from llamaship_build import locks
from llamaship_build.errors import BuildError
from llamaship_build.project import Project
from llamaship_contract.names import ExitStatus


def run(check: bool, upgrade: bool, project: Project) -> int:
    """Check (exit LOCK_STALE naming each stale lock) or compile every target's locks."""
    if check:
        problems = locks.check_all(project.requirements)
        for problem in problems:
            print(f"stale lock: {problem}", file=sys.stderr)
        return ExitStatus.LOCK_STALE if problems else ExitStatus.OK
    locks.compile_all(project.requirements, upgrade=upgrade)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--check", action="store_true", help="fail if a lock is stale")
    parser.add_argument("--upgrade", action="store_true", help="upgrade every pin")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llamaship_build.lock_command",
        description="compile the per-OS hash-locked requirements",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args.check, args.upgrade, Project.here())
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    raise SystemExit(main())

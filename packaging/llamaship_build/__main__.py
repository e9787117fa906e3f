"""`python -m llamaship_build COMMAND`: the build steps the nox sessions call."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from llamaship.errors import LlamashipError
from llamaship_build import locks, platforms
from llamaship_build.bundle import build_bundle
from llamaship_build.llama_wheel import FLAVOURS, Pin, ensure_wheel
from llamaship_build.project import Project, cache_dir
from llamaship_build.spec import write_spec


def _lock(args: argparse.Namespace, project: Project) -> int:
    if args.check:
        problems = locks.check_all(project.requirements)
        for problem in problems:
            print(f"stale lock: {problem}", file=sys.stderr)
        return 1 if problems else 0
    locks.compile_all(project.requirements, upgrade=args.upgrade)
    return 0


def _wheel(args: argparse.Namespace, project: Project) -> int:
    pin = Pin.from_lock(project.requirements / "cpu.txt")
    print(ensure_wheel(pin, FLAVOURS[args.flavour], cache_dir() / "wheelhouse"))
    return 0


def _spec(args: argparse.Namespace, project: Project) -> int:
    print(write_spec(project, platforms.current(), Path(args.out)))
    return 0


def _bundle(args: argparse.Namespace, project: Project) -> int:
    print(build_bundle(project, force=args.force))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llamaship_build")
    commands = parser.add_subparsers(dest="command", required=True)
    lock = commands.add_parser("lock", help="compile the hash-locked requirements")
    lock.add_argument("--check", action="store_true", help="fail if a lock is stale")
    lock.add_argument("--upgrade", action="store_true", help="upgrade every pin")
    lock.set_defaults(handler=_lock)
    wheel = commands.add_parser("wheel", help="compile (or reuse) the llama-cpp-python wheel")
    wheel.add_argument("--flavour", choices=sorted(FLAVOURS), default="portable")
    wheel.set_defaults(handler=_wheel)
    spec = commands.add_parser("spec", help="render templates/backend.spec.j2")
    spec.add_argument("--out", default="backend.spec", help="where to write the spec")
    spec.set_defaults(handler=_spec)
    bundle = commands.add_parser("bundle", help="build the CPU bundle into dist/")
    bundle.add_argument("--force", action="store_true", help="rebuild even if up to date")
    bundle.set_defaults(handler=_bundle)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="llamaship_build: %(message)s")
    try:
        return int(args.handler(args, Project.here()))
    except LlamashipError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    raise SystemExit(main())

"""`python -m llamaship_build` commands that make the CPU build: locks, generated files, the
llama-cpp-python wheel, the fit tool, the spec and the bundle."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from llamaship_build import lock_command, platforms
from llamaship_build.bundle import build_bundle
from llamaship_build.llama_wheel import FLAVOURS, Pin, ensure_wheel
from llamaship_build.project import Project, cache_dir
from llamaship_build.spec import write_spec


def _lock(args: argparse.Namespace, project: Project) -> int:
    return lock_command.run(args.check, args.upgrade, project)


def _exit_statuses(args: argparse.Namespace, project: Project) -> int:
    from llamaship_build.exit_statuses import sync

    doc = project.docs / "runtime.md"
    if sync(doc, check=args.check):
        return 0
    if args.check:
        from llamaship_build.errors import BuildError

        msg = (
            f"the exit status table in {doc} is stale; run `python -m llamaship_build "
            "exit-statuses`"
        )
        raise BuildError(msg)
    print(f"updated the exit status table in {doc}")
    return 0


def _schemas(args: argparse.Namespace, project: Project) -> int:
    from llamaship_build import openapi
    from llamaship_contract import registry

    directory = project.docs / "schemas"
    if args.check:
        stale = registry.stale_files(directory)
        if openapi.is_stale(directory):
            stale.append(openapi.FILE_NAME)
        if stale:
            from llamaship_build.errors import BuildError

            msg = (
                f"{directory} is stale ({', '.join(stale)}); run `nox -s schemas` and "
                "commit the result"
            )
            raise BuildError(msg)
        return 0
    written = registry.export(directory)
    openapi.export(directory)
    print(f"wrote {len(written)} JSON Schema files and {openapi.FILE_NAME} to {directory}")
    return 0


def _wheel(args: argparse.Namespace, project: Project) -> int:
    from llamaship_build.settings import BuildSettings
    from llamaship_build.toolchain import select_toolchain

    pin = Pin.from_lock(project.requirements / "cpu.txt")
    toolchain = select_toolchain(BuildSettings.resolve(os.environ), cache_dir())
    wheel = ensure_wheel(pin, FLAVOURS[args.flavour], cache_dir() / "wheelhouse", toolchain)
    if args.path_file is not None:  # for callers (nox) that read the result from a file
        args.path_file.parent.mkdir(parents=True, exist_ok=True)
        args.path_file.write_text(f"{wheel}\n", encoding="utf-8")
    print(wheel)
    return 0


def _fit_tool(args: argparse.Namespace, project: Project) -> int:
    from llamaship_build.fit_tool import check_abi, ensure_fit_tool

    tool = ensure_fit_tool(
        Pin.from_lock(project.requirements / "cpu.txt"), cache_dir() / "fit-tool"
    )
    if args.check is not None:
        check_abi(tool, args.check)
    for path in tool.files:
        print(f"{path}  {path.stat().st_size:,} bytes")
    print(f"total {tool.size:,} bytes")
    return 0


def _spec(args: argparse.Namespace, project: Project) -> int:
    print(write_spec(project, platforms.current(), Path(args.out)))
    return 0


def _bundle(args: argparse.Namespace, project: Project) -> int:
    print(build_bundle(project, force=args.force))
    return 0


def _root(args: argparse.Namespace, project: Project) -> int:
    from llamaship_build import debian_root_create
    from llamaship_build.debian_root_tarball import tarball_name

    if args.name:
        print(tarball_name(debian_root_create.root_name()))
        return 0
    print(debian_root_create.ensure_debian_root(cache_dir()).path)
    return 0


def _root_export(args: argparse.Namespace, project: Project) -> int:
    from llamaship_build.debian_root_create import export

    tarball, sha256 = export(cache_dir(), args.out_dir)
    print(f"{tarball}  {tarball.stat().st_size:,} bytes  sha256 {sha256}")
    return 0


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this group's commands to `python -m llamaship_build`."""
    lock = commands.add_parser("lock", help="compile the hash-locked requirements")
    lock_command.add_arguments(lock)
    lock.set_defaults(handler=_lock)
    statuses = commands.add_parser(
        "exit-statuses", help="write ExitStatus's table into docs/runtime.md"
    )
    statuses.add_argument("--check", action="store_true", help="fail if the table is stale")
    statuses.set_defaults(handler=_exit_statuses)
    schemas = commands.add_parser(
        "schemas",
        help="export the contract's JSON Schemas and the API's OpenAPI document to docs/schemas/",
    )
    schemas.add_argument("--check", action="store_true", help="fail if the export is stale")
    schemas.set_defaults(handler=_schemas)
    wheel = commands.add_parser("wheel", help="compile (or reuse) the llama-cpp-python wheel")
    wheel.add_argument("--flavour", choices=sorted(FLAVOURS), default="portable")
    wheel.add_argument("--path-file", type=Path, help="also write the wheel's path to this file")
    wheel.set_defaults(handler=_wheel)
    fit_tool = commands.add_parser(
        "fit-tool", help="compile (or reuse) llama.cpp's llama-fit-params"
    )
    fit_tool.add_argument(
        "--check",
        type=Path,
        metavar="LIB_DIR",
        help="check it links against the llama_cpp/lib directory LIB_DIR",
    )
    fit_tool.set_defaults(handler=_fit_tool)
    spec = commands.add_parser("spec", help="render templates/backend.spec.j2")
    spec.add_argument("--out", default="backend.spec", help="where to write the spec")
    spec.set_defaults(handler=_spec)
    bundle = commands.add_parser("bundle", help="build the CPU bundle into dist/")
    bundle.add_argument("--force", action="store_true", help="rebuild even if up to date")
    bundle.set_defaults(handler=_bundle)
    root = commands.add_parser(
        "root",
        help="make (or unpack from LLAMASHIP_BUILD_DEBIAN_ROOT_TARBALL) the Debian 11 build root",
    )
    root.add_argument(
        "--name", action="store_true", help="print its tarball's name (a cache key) only"
    )
    root.set_defaults(handler=_root)
    export = commands.add_parser(
        "root-export", help="write the Debian 11 build root as a tarball (and its .sha256)"
    )
    export.add_argument("out_dir", type=Path, metavar="DIR", help="where to write them")
    export.set_defaults(handler=_root_export)

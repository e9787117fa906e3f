"""`python -m llamaship_build COMMAND`: the build steps the nox sessions call."""

from __future__ import annotations

import argparse
import logging
import os
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


def _bench(args: argparse.Namespace, project: Project) -> int:
    from llamaship_build import bench

    fixture = (project.root.parent / "shared" / "fixtures" / "llama-cpp-python-0.3.36-cuda-sm75"
               / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl")
    overlay_wheel = args.overlay_wheel or (fixture if fixture.is_file() else None)
    report = bench.run(project, launches=args.launches, rounds=args.rounds,
                       n_tokens=args.tokens, threads=args.threads, overlay_wheel=overlay_wheel)
    print(report)
    out = project.docs / "benchmarks.md"
    out.write_text(bench.HEADER + report)
    print(f"written to {out}")
    return 0


def _overlay(args: argparse.Namespace, project: Project) -> int:
    from llamaship_build import overlay_release

    kind, *rest = args.source or [os.environ.get("LLAMASHIP_OVERLAY_SOURCE", "wheel-index")]
    if args.if_reachable and not args.source and "LLAMASHIP_OVERLAY_SOURCE" not in os.environ \
            and not overlay_release.wheel_index_reachable(project):
        print("overlay skipped: the CUDA wheel index is not reachable from here; set "
              "LLAMASHIP_OVERLAY_SOURCE=build (compile with nvcc, ~1 h per architecture) or "
              "run `nox -s overlay -- --source wheel PATH`", file=sys.stderr)
        return 0
    if kind not in ("wheel-index", "build", "wheel") or (kind == "wheel") != (len(rest) == 1):
        print("error: --source takes wheel-index, build, or wheel PATH", file=sys.stderr)
        return 2
    options = overlay_release.OverlayOptions(
        source=kind, wheel=Path(rest[0]) if rest else None, archs=tuple(args.archs.split(",")),
        ptx_archs=tuple(filter(None, args.ptx_archs.split(","))),
        serial=args.serial or overlay_release.default_serial(), level=args.level,
        key_file=args.key_file, out_dir=project.dist / "overlay")
    for path in overlay_release.build(project, options):
        print(path)
    return 0


def _release(args: argparse.Namespace, project: Project) -> int:
    from llamaship_build import overlay_release

    for path in overlay_release.release(
            project.dist / "overlay", project.dist / "release",
            args.serial or overlay_release.default_serial(), args.base_url, args.key_file):
        print(path)
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
    overlay = commands.add_parser("overlay", help="build the signed CUDA overlay layers")
    overlay.add_argument("--source", nargs="+", metavar="KIND",
                         help="wheel-index | build | wheel PATH (default: LLAMASHIP_OVERLAY_SOURCE"
                              " or wheel-index)")
    overlay.add_argument("--if-reachable", action="store_true",
                         help="skip quietly when no CUDA source is reachable")
    overlay.add_argument("--archs", default="75,80,86,89,90",
                         help="real CUDA architectures for --source build (comma-separated)")
    overlay.add_argument("--ptx-archs", default="", help="PTX architectures (JIT on newer GPUs)")
    overlay.add_argument("--serial", type=int, help="release serial (default: epoch seconds)")
    overlay.add_argument("--level", type=int, default=19, help="zstd compression level")
    overlay.add_argument("--key-file", type=Path,
                         help="signing key file (default: $LLAMASHIP_SIGNING_KEY)")
    overlay.set_defaults(handler=_overlay)
    release = commands.add_parser("release", help="write the signed releases.json index")
    release.add_argument("--serial", type=int, help="index serial (default: epoch seconds)")
    release.add_argument("--base-url", default="", help="where the files will be published")
    release.add_argument("--key-file", type=Path,
                         help="signing key file (default: $LLAMASHIP_SIGNING_KEY)")
    release.set_defaults(handler=_release)
    bench = commands.add_parser("bench", help="measure the bundle; write docs/benchmarks.md")
    bench.add_argument("--launches", type=int, default=5, help="launches to time (median)")
    bench.add_argument("--rounds", type=int, default=3, help="alternating generation rounds")
    bench.add_argument("--tokens", type=int, default=64, help="tokens per generation")
    bench.add_argument("--threads", type=int, default=1, help="llama.cpp threads")
    bench.add_argument("--overlay-wheel", type=Path,
                       help="CUDA llama-cpp-python wheel for the overlay install bench "
                            "(default: the shared/fixtures sm_75 build, when present)")
    bench.set_defaults(handler=_bench)
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

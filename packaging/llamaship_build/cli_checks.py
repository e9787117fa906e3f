"""`python -m llamaship_build` commands that check and measure builds: reproducibility, the
libraries the binaries import, and the benchmarks."""

from __future__ import annotations

import argparse
from pathlib import Path

from llamaship_build.llama_wheel import Pin, pinned_version
from llamaship_build.project import Project, cache_dir


def _repro(args: argparse.Namespace, project: Project) -> int:
    import tempfile

    from llamaship_build.locks import host_lock
    from llamaship_build.repro import NotReproducible, build_twice, prove_compile
    from llamaship_build.toolchain import default_toolchain

    work = Path(args.work or tempfile.mkdtemp(prefix="llamaship-repro-"))
    if args.compile:
        pin = Pin.from_lock(host_lock(project.requirements, "cpu"))
        prove_compile(pin, work / "compiled", cache_dir(), default_toolchain())
        print(f"reproducible: two compiles in {work / 'compiled'} gave identical wheels and tools")
    steps = [["bundle", "--force"]]
    if args.overlay_wheel is not None:
        steps.append(["overlay", "--unsigned", "--source", "wheel", str(args.overlay_wheel)])
    problems = build_twice(project.root, work, steps)
    if problems:
        raise NotReproducible("two builds of the same commit differ:\n  " + "\n  ".join(problems))
    print(f"reproducible: both builds in {work} gave byte-identical archives")
    return 0


def _check_imports(args: argparse.Namespace, project: Project) -> int:
    from llamaship_build.imports_check import check_imports
    from llamaship_build.platforms import current

    platform = args.platform or current().name
    checked = check_imports(args.directory, platform)
    print(f"imports: the {checked} {platform} binaries in {args.directory} load nothing missing")
    return 0


def _bench(args: argparse.Namespace, project: Project) -> int:
    from llamaship_build import bench

    version = pinned_version(project.requirements)
    fixture = (
        project.root.parent
        / "shared"
        / "fixtures"
        / f"llama-cpp-python-{version}-cuda-sm75"
        / f"llama_cpp_python-{version}-py3-none-linux_x86_64.whl"
    )
    overlay_wheel = args.overlay_wheel or (fixture if fixture.is_file() else None)
    report = bench.run(
        project,
        launches=args.launches,
        rounds=args.rounds,
        n_tokens=args.tokens,
        threads=args.threads,
        overlay_wheel=overlay_wheel,
    )
    print(report)
    out = project.docs / "benchmarks.md"
    out.write_text(bench.HEADER + report)
    print(f"written to {out}")
    return 0


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this group's commands to `python -m llamaship_build`."""
    repro = commands.add_parser(
        "repro", help="build twice from clean exports of HEAD and compare the archives"
    )
    repro.add_argument(
        "--work",
        help="a new directory for the two builds (default: a temporary one, kept for inspection)",
    )
    repro.add_argument(
        "--compile",
        action="store_true",
        help="first compile llama-cpp-python and the fit tool twice and compare (~30 minutes)",
    )
    repro.add_argument(
        "--overlay-wheel",
        type=Path,
        help="also build the overlay layers from this CUDA wheel, twice",
    )
    repro.set_defaults(handler=_repro)
    imports = commands.add_parser(
        "check-imports",
        help="fail unless every library the binaries in DIR import is in DIR or the OS's",
    )
    imports.add_argument("directory", type=Path, metavar="DIR", help="a bundle or layer")
    imports.add_argument(
        "--platform",
        choices=("linux", "windows", "macos"),
        help="whose binaries and system libraries (default: this machine's)",
    )
    imports.set_defaults(handler=_check_imports)
    bench = commands.add_parser("bench", help="measure the bundle; write docs/benchmarks.md")
    bench.add_argument("--launches", type=int, default=5, help="launches to time (median)")
    bench.add_argument("--rounds", type=int, default=3, help="alternating generation rounds")
    bench.add_argument("--tokens", type=int, default=64, help="tokens per generation")
    bench.add_argument("--threads", type=int, default=1, help="llama.cpp threads")
    bench.add_argument(
        "--overlay-wheel",
        type=Path,
        help="CUDA llama-cpp-python wheel for the overlay install bench "
        "(default: the shared/fixtures sm_75 build, when present)",
    )
    bench.set_defaults(handler=_bench)

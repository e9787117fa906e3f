"""`python -m llamaship_build COMMAND`: the build steps the nox sessions call."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from llamaship_build import lock_command, platforms
from llamaship_build.bundle import build_bundle
from llamaship_build.llama_wheel import FLAVOURS, Pin, ensure_wheel
from llamaship_build.project import Project, cache_dir
from llamaship_build.release_index import DEFAULT_LIFETIME
from llamaship_build.spec import write_spec
from llamaship_contract.errors import LlamashipError

# How long a release index is believed (TUF's freeze attack); the scheduled job re-signs it.
DEFAULT_EXPIRY_DAYS = DEFAULT_LIFETIME.days


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
    from llamaship_contract import registry

    directory = project.docs / "schemas"
    if args.check:
        stale = registry.stale_files(directory)
        if stale:
            from llamaship_build.errors import BuildError

            msg = (
                f"{directory} is stale ({', '.join(stale)}); run `nox -s schemas` and "
                "commit the result"
            )
            raise BuildError(msg)
        return 0
    written = registry.export(directory)
    print(f"wrote {len(written)} JSON Schema files to {directory}")
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


def _bench(args: argparse.Namespace, project: Project) -> int:
    from llamaship_build import bench

    fixture = (
        project.root.parent
        / "shared"
        / "fixtures"
        / "llama-cpp-python-0.3.36-cuda-sm75"
        / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl"
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


def _overlay(args: argparse.Namespace, project: Project) -> int:
    from llamaship_build import overlay_release

    kind, *rest = args.source or [os.environ.get("LLAMASHIP_BUILD_OVERLAY_SOURCE", "wheel-index")]
    if kind == "auto" and not rest:  # the pinned official wheel, else a source build
        from llamaship_build.overlay_pin import auto_source

        kind = auto_source(project.requirements)
    if (
        args.if_reachable
        and not args.source
        and "LLAMASHIP_BUILD_OVERLAY_SOURCE" not in os.environ
        and not overlay_release.wheel_index_reachable(project)
    ):
        print(
            "overlay skipped: the CUDA wheel index is not reachable from here; set "
            "LLAMASHIP_BUILD_OVERLAY_SOURCE=build (compile with nvcc, ~1 h per architecture) or "
            "run `nox -s overlay -- --source wheel PATH`",
            file=sys.stderr,
        )
        return 0
    if kind not in ("wheel-index", "build", "wheel") or (kind == "wheel") != (len(rest) == 1):
        print("error: --source takes wheel-index, build, or wheel PATH", file=sys.stderr)
        return 2
    options = overlay_release.OverlayOptions(
        source=kind,
        wheel=Path(rest[0]) if rest else None,
        archs=tuple(args.archs.split(",")),
        ptx_archs=tuple(filter(None, args.ptx_archs.split(","))),
        serial=args.serial or overlay_release.default_serial(),
        level=args.level,
        key_file=args.key_file,
        out_dir=project.dist / "overlay",
        unsigned=args.unsigned,
    )
    for path in overlay_release.build(project, options):
        print(path)
    return 0


def _release(args: argparse.Namespace, project: Project) -> int:
    from llamaship_build import overlay_release

    for path in overlay_release.release(
        project.dist / "overlay",
        project.dist / "release",
        args.serial or overlay_release.default_serial(),
        args.base_url,
        args.key_file,
        lifetime=timedelta(days=args.expires_in_days),
    ):
        print(path)
    return 0


def _check_signing_key(args: argparse.Namespace, project: Project) -> int:
    from llamaship_build.release_sign import check_signing_key
    from llamaship_build.spec import trusted_keys
    from llamaship_contract.signing import load_signing_key

    key_id = check_signing_key(load_signing_key(args.key_file, os.environ), trusted_keys(project))
    print(f"the signing key {key_id} is among the bundle's trusted keys")
    return 0


def _sign_release(args: argparse.Namespace, project: Project) -> int:
    from llamaship_build import overlay_release
    from llamaship_build.release_sign import sign_release
    from llamaship_build.spec import trusted_keys

    for path in sign_release(
        project.dist / "overlay",
        Path(args.out) if args.out else project.dist / "release",
        trusted_keys(project),
        serial=args.serial or overlay_release.default_serial(),
        base_url=args.base_url,
        key_file=args.key_file,
        lifetime=timedelta(days=args.expires_in_days),
    ):
        print(path)
    return 0


def _release_assets(args: argparse.Namespace, project: Project) -> int:
    from llamaship_build.release_assets import collect_bundle_assets, write_sums

    out = Path(args.out)
    if args.sums:
        print(write_sums(out))
        return 0
    for path in collect_bundle_assets(project.dist, out):
        print(path)
    return 0


def _pin_overlay_source(args: argparse.Namespace, project: Project) -> int:
    from llamaship_build.overlay_pin import pin_overlay_source

    print(pin_overlay_source(project.requirements, args.index_url))
    return 0


def _publish(args: argparse.Namespace, project: Project) -> int:
    from llamaship_build.publish import publish

    publish(args.tag, Path(args.directory), notes=args.notes)
    return 0


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


def _resign_index(args: argparse.Namespace, project: Project) -> int:
    from llamaship_build.resign_index import resign_index
    from llamaship_build.spec import trusted_keys

    for path in resign_index(
        args.source,
        Path(args.out) if args.out else project.dist / "resigned",
        trusted_keys(project),
        key_file=args.key_file,
        lifetime=timedelta(days=args.expires_in_days),
        serial=args.serial,
    ):
        print(path)
    return 0


def _positive_days(text: str) -> int:
    try:
        days = int(text)
    except ValueError:
        days = 0
    if days < 1:
        msg = f"must be a whole number of days >= 1, not {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return days


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llamaship_build")
    commands = parser.add_subparsers(dest="command", required=True)
    lock = commands.add_parser("lock", help="compile the hash-locked requirements")
    lock_command.add_arguments(lock)
    lock.set_defaults(handler=_lock)
    statuses = commands.add_parser(
        "exit-statuses", help="write ExitStatus's table into docs/runtime.md"
    )
    statuses.add_argument("--check", action="store_true", help="fail if the table is stale")
    statuses.set_defaults(handler=_exit_statuses)
    schemas = commands.add_parser(
        "schemas", help="export the contract's JSON Schemas to docs/schemas/"
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
    overlay = commands.add_parser("overlay", help="build the signed CUDA overlay layers")
    overlay.add_argument(
        "--source",
        nargs="+",
        metavar="KIND",
        help="wheel-index | build | auto (the pinned wheel if "
        "requirements/overlay-sources.json exists, else build) | wheel PATH "
        "(default: LLAMASHIP_BUILD_OVERLAY_SOURCE or wheel-index)",
    )
    overlay.add_argument(
        "--if-reachable", action="store_true", help="skip quietly when no CUDA source is reachable"
    )
    overlay.add_argument(
        "--archs",
        default="75,80,86,89,90",
        help="real CUDA architectures for --source build (comma-separated)",
    )
    overlay.add_argument("--ptx-archs", default="", help="PTX architectures (JIT on newer GPUs)")
    overlay.add_argument("--serial", type=int, help="release serial (default: epoch seconds)")
    overlay.add_argument("--level", type=int, default=19, help="zstd compression level")
    overlay.add_argument(
        "--key-file", type=Path, help="signing key file (default: $LLAMASHIP_SIGNING_KEY)"
    )
    overlay.add_argument(
        "--unsigned",
        action="store_true",
        help="write no manifest signatures (`sign-release` adds them later)",
    )
    overlay.set_defaults(handler=_overlay)
    release = commands.add_parser("release", help="write the signed releases.json index")
    release.add_argument("--serial", type=int, help="index serial (default: epoch seconds)")
    release.add_argument("--base-url", default="", help="where the files will be published")
    release.add_argument(
        "--key-file", type=Path, help="signing key file (default: $LLAMASHIP_SIGNING_KEY)"
    )
    release.add_argument(
        "--expires-in-days",
        type=_positive_days,
        default=DEFAULT_EXPIRY_DAYS,
        help="days until the index expires and runtimes refuse it (default: "
        f"{DEFAULT_EXPIRY_DAYS}); the scheduled job re-signs it before",
    )
    release.set_defaults(handler=_release)
    resign = commands.add_parser(
        "resign-index",
        help="re-sign the live releases.json: higher serial, new expiry",
        description="Download (or read) the published release index, check its signature "
        "against the bundle's trusted keys, and write it again with a higher serial "
        "and a new expiry, signed, into --out. Run by the scheduled release job.",
    )
    resign.add_argument("source", help="URL or path of the live releases.json")
    resign.add_argument("--out", help="output directory (default: dist/resigned)")
    resign.add_argument(
        "--serial", type=int, help="new serial (default: epoch seconds, at least the live one + 1)"
    )
    resign.add_argument(
        "--expires-in-days",
        type=_positive_days,
        default=DEFAULT_EXPIRY_DAYS,
        help=f"days until the new index expires (default: {DEFAULT_EXPIRY_DAYS})",
    )
    resign.add_argument(
        "--key-file", type=Path, help="signing key file (default: $LLAMASHIP_SIGNING_KEY)"
    )
    resign.set_defaults(handler=_resign_index)
    check_key = commands.add_parser(
        "check-signing-key",
        help="fail unless the signing key's public half is trusted",
        description="Check that the public half of the signing key ($LLAMASHIP_SIGNING_KEY or "
        "--key-file) is in runtime/llamaship/trusted_keys.json, which every bundle "
        "trusts; exit 1 otherwise.",
    )
    check_key.add_argument(
        "--key-file", type=Path, help="signing key file (default: $LLAMASHIP_SIGNING_KEY)"
    )
    check_key.set_defaults(handler=_check_signing_key)
    sign = commands.add_parser(
        "sign-release", help="check the key, sign dist/overlay's manifests, write the index"
    )
    sign.add_argument("--out", help="output directory (default: dist/release)")
    sign.add_argument("--serial", type=int, help="index serial (default: epoch seconds)")
    sign.add_argument("--base-url", default="", help="where the files will be published")
    sign.add_argument(
        "--key-file", type=Path, help="signing key file (default: $LLAMASHIP_SIGNING_KEY)"
    )
    sign.add_argument(
        "--expires-in-days",
        type=_positive_days,
        default=DEFAULT_EXPIRY_DAYS,
        help=f"days until the index expires (default: {DEFAULT_EXPIRY_DAYS})",
    )
    sign.set_defaults(handler=_sign_release)
    assets = commands.add_parser(
        "release-assets",
        help="copy the bundle's files into OUT under per-OS names, or "
        "(--sums) write OUT/SHA256SUMS over every file in OUT",
    )
    assets.add_argument("out", help="the release asset directory")
    assets.add_argument("--sums", action="store_true", help="write SHA256SUMS instead")
    assets.set_defaults(handler=_release_assets)
    pin = commands.add_parser(
        "pin-overlay-source",
        help="pin the official CUDA wheel in requirements/overlay-sources.json",
    )
    pin.add_argument(
        "--index-url",
        required=True,
        help="the CUDA wheel index, e.g. https://abetlen.github.io/llama-cpp-python/whl/cu124",
    )
    pin.set_defaults(handler=_pin_overlay_source)
    publish = commands.add_parser(
        "publish", help="publish DIRECTORY as GitHub release TAG: draft, upload, then public"
    )
    publish.add_argument("tag")
    publish.add_argument("directory")
    publish.add_argument("--notes", default="", help="release notes")
    publish.set_defaults(handler=_publish)
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

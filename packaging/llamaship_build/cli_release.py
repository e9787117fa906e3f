"""`python -m llamaship_build` commands of the CUDA overlay and the release: build, sign,
index, re-sign, collect and publish."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import timedelta
from pathlib import Path

from llamaship_build.project import Project
from llamaship_build.release_index import DEFAULT_LIFETIME

# How long a release index is believed (TUF's freeze attack); the scheduled job re-signs it.
DEFAULT_EXPIRY_DAYS = DEFAULT_LIFETIME.days
# ggml's GGML_CUDA_COMPRESSION_MODE values, passed to nvcc as -compress-mode (cuda_module
# checks them again; listed here to keep the CLI light).
COMPRESS_MODES = ("size", "balance", "speed", "none")
# The release's CUDA architectures: Turing (GTX 16xx, RTX 20xx) to Blackwell (RTX 50xx), one
# overlay each. The PTX (JIT-compiled by the driver for GPUs newer still) goes with the newest
# overlay and is compute_100: ggml compiles any 12X as the arch-specific 12Xa, whose PTX runs
# on no other GPU.
RELEASE_ARCHS = "75,80,86,89,90,100,120"
RELEASE_PTX_ARCHS = "100"


def _overlay(args: argparse.Namespace, project: Project) -> int:
    from llamaship_build import overlay_release
    from llamaship_build.settings import BuildSettings

    configured = BuildSettings.resolve(os.environ).overlay_source
    if args.if_configured and not args.source and configured is None:
        print(
            "overlay skipped: no CUDA source is configured; set "
            "LLAMASHIP_BUILD_OVERLAY_SOURCE=build (compile the module with nvcc, ~25 min per "
            "architecture) or run `nox -s overlay -- --source wheel PATH`",
            file=sys.stderr,
        )
        return 0
    kind, *rest = args.source or [configured or "build"]
    if kind not in overlay_release.SOURCES or (kind == "wheel") != (len(rest) == 1):
        print("error: --source takes build, or wheel PATH", file=sys.stderr)
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
        compress_mode=args.compress_mode,
        per_arch=args.per_arch,
    )
    for path in overlay_release.build(project, options):
        print(path)
    return 0


def _release(args: argparse.Namespace, project: Project) -> int:
    from llamaship_build import overlay_release
    from llamaship_contract.signing import load_signing_key

    for path in overlay_release.release(
        project.dist / "overlay",
        project.dist / "release",
        args.serial or overlay_release.default_serial(),
        args.base_url,
        load_signing_key(args.key_file, os.environ),
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
    from llamaship_build.release_sign import DRY_RUN_NOTE, sign_release
    from llamaship_build.spec import trusted_keys

    for path in sign_release(
        project.dist / "overlay",
        Path(args.out) if args.out else project.dist / "release",
        trusted_keys(project),
        serial=args.serial or overlay_release.default_serial(),
        base_url=args.base_url,
        key_file=args.key_file,
        lifetime=timedelta(days=args.expires_in_days),
        dry_run=args.dry_run,
    ):
        print(path)
    if args.dry_run:
        print(f"dry run: signed with a throwaway key that no bundle trusts ({DRY_RUN_NOTE})")
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


def _publish(args: argparse.Namespace, project: Project) -> int:
    from llamaship_build.publish import publish

    publish(args.tag, Path(args.directory), notes=args.notes)
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


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this group's commands to `python -m llamaship_build`."""
    overlay = commands.add_parser("overlay", help="build the signed CUDA overlay layers")
    overlay.add_argument(
        "--source",
        nargs="+",
        metavar="KIND",
        help="where the CUDA backend module comes from: build (compile it with nvcc) | wheel "
        "PATH (a llama-cpp-python CUDA wheel built with the bundle's flags) "
        "(default: LLAMASHIP_BUILD_OVERLAY_SOURCE or build)",
    )
    overlay.add_argument(
        "--if-configured",
        action="store_true",
        help="skip quietly unless --source or LLAMASHIP_BUILD_OVERLAY_SOURCE names a source",
    )
    overlay.add_argument(
        "--archs",
        default=RELEASE_ARCHS,
        help="real CUDA architectures for --source build, comma-separated (default: Turing "
        f"to Blackwell, {RELEASE_ARCHS})",
    )
    overlay.add_argument(
        "--ptx-archs",
        default=RELEASE_PTX_ARCHS,
        help="PTX architectures, JIT-compiled by the driver on newer GPUs (default: "
        f"{RELEASE_PTX_ARCHS})",
    )
    overlay.add_argument(
        "--per-arch",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one overlay per real architecture, the PTX with the newest: each GPU downloads "
        "only its own (default; --no-per-arch puts them all in one)",
    )
    overlay.add_argument(
        "--compress-mode",
        default="size",
        choices=COMPRESS_MODES,
        help="nvcc's fat-binary compression for --source build (ggml's default: size)",
    )
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
        "--key-file", type=Path, help="index key file (default: $LLAMASHIP_INDEX_KEY)"
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
    sign.add_argument(
        "--dry-run",
        action="store_true",
        help="sign with a throwaway key that no bundle trusts (no secret needed)",
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
    publish = commands.add_parser(
        "publish", help="publish DIRECTORY as GitHub release TAG: draft, upload, then public"
    )
    publish.add_argument("tag")
    publish.add_argument("directory")
    publish.add_argument("--notes", default="", help="release notes")
    publish.set_defaults(handler=_publish)

"""`llamaship overlay install|status|rollback|remove`: manage the CUDA overlay by hand."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llamaship.config import Settings
    from llamaship.overlay.install import InstallProgress
    from llamaship.overlay.store import OverlayStore
from llamaship.overlay.installed import InstalledOverlay

_LLAMA_DISTRIBUTION = "llama_cpp_python"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "overlay", help="install, inspect or remove the GPU overlays (CUDA, Vulkan)"
    )
    actions = parser.add_subparsers(dest="overlay_command", metavar="ACTION", required=True)
    install = actions.add_parser(
        "install",
        help="install the overlay from a release (directory, releases.json or URL)",
        description="Verify, download, unpack, probe and activate the overlay the signed "
        "release index offers this machine: a CUDA overlay for an NVIDIA GPU first, else a "
        "Vulkan overlay for the chosen Vulkan device. Progress goes to stderr.",
    )
    install.add_argument(
        "source",
        help="a release directory, its releases.json, or an http(s):// URL of releases.json",
    )
    install.add_argument(
        "--llama-cpp-version",
        help="the bundle's llama-cpp-python version (default: the installed one)",
    )
    install.add_argument(
        "--kind",
        choices=("auto", "cuda", "vulkan"),
        default="auto",
        help="which overlay to install (default: auto, the best this machine can run)",
    )
    status = actions.add_parser("status", help="show the active and previous overlay")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    actions.add_parser("rollback", help="switch back to the previously active overlay")
    remove = actions.add_parser(
        "remove", help="deactivate the overlay (run on CPU; rollback restores it)"
    )
    remove.add_argument(
        "--kind",
        choices=("cuda", "vulkan"),
        default="cuda",
        help="which overlay (default: cuda; a removed Vulkan overlay is deleted)",
    )


def _settings(args: argparse.Namespace) -> Settings:
    from llamaship.config import executable_dir, load_settings

    return load_settings(args.env_file, bundle_dir=executable_dir())


def _bundle_llama_cpp_version(given: str | None) -> str:
    import importlib.metadata

    from llamaship.errors import ConfigError

    if given:
        return given
    try:
        return importlib.metadata.version(_LLAMA_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        msg = (
            "cannot tell which llama-cpp-python version this bundle carries: "
            "pass --llama-cpp-version"
        )
        raise ConfigError(msg) from None


class _ProgressPrinter:
    """Prints phase changes and every tenth of the download to stderr."""

    def __init__(self) -> None:
        self._phase = ""
        self._tenth = -1

    def __call__(self, progress: InstallProgress) -> None:
        if progress.phase != self._phase:
            self._phase = progress.phase
            print(f"[{progress.phase}] {progress.message}", file=sys.stderr)
        if progress.phase == "download" and progress.bytes_total:
            tenth = 10 * progress.bytes_done // progress.bytes_total
            if tenth != self._tenth:
                self._tenth = tenth
                print(
                    f"  {progress.bytes_done / 1e6:.1f} / {progress.bytes_total / 1e6:.1f} MB",
                    file=sys.stderr,
                )


def _check_release_path(path: Path, source: str) -> None:
    """A local release that is not there is the user's mistake (a usage error)."""
    from llamaship.errors import ConfigError
    from llamaship_contract.names import INDEX_NAME
    from llamaship_contract.textsafe import printable

    index = path / INDEX_NAME if path.is_dir() else path
    if not index.is_file():
        where = "has no " + INDEX_NAME if path.is_dir() else "does not exist"
        msg = (
            f"the release {printable(source)} {where}: pass a release directory, its "
            f"{INDEX_NAME} or an https:// URL of {INDEX_NAME}"
        )
        raise ConfigError(msg)


def interrupted(args: argparse.Namespace, prog: str) -> str:
    """The line `main` prints when Ctrl-C stops this command."""
    if args.overlay_command != "install":
        return "stopped"
    return (
        f"the partial download is kept in {_settings(args).home / 'downloads'}; run "
        f"`{prog} overlay install {args.source}` again to resume it"
    )


def _install(args: argparse.Namespace) -> int:
    import llamaship
    from llamaship.detect import load_or_detect
    from llamaship.detect.vulkan_choice import vulkan_device_choice
    from llamaship.io.local_files import local_path
    from llamaship.io.trusted_keys import trusted_keys
    from llamaship.overlay.best import install_best
    from llamaship.overlay.install import Installer, index_location_of
    from llamaship.overlay.select import Target
    from llamaship.overlay.vulkan import VulkanInstaller
    from llamaship.paths import DataDirs

    path = local_path(args.source)
    if path is not None:
        _check_release_path(path, args.source)
    settings = _settings(args)
    dirs = DataDirs(settings.home)
    report = load_or_detect(settings, dirs, {"bundle": llamaship.__version__})
    choice = vulkan_device_choice(report, settings)
    version = _bundle_llama_cpp_version(args.llama_cpp_version)
    target = Target.current(report, version, vulkan_device=choice.device_index)
    location = args.source if path is None else index_location_of(path)
    keys, progress = trusted_keys(args.trusted_keys), _ProgressPrinter()
    best = install_best(
        location,
        target,
        cuda=Installer(dirs, keys, progress=progress) if args.kind in ("auto", "cuda") else None,
        vulkan=VulkanInstaller(dirs, keys, choice=choice, progress=progress)
        if args.kind in ("auto", "vulkan")
        else None,
    )
    if best.vulkan is not None:
        print(
            f"Vulkan overlay {best.overlay_version} is installed ({best.vulkan.module.name}); "
            "restart the app to use it"
        )
        return 0
    assert best.cuda is not None
    result = best.cuda
    overlay = result.overlay
    if not result.changed:
        print(f"overlay {overlay.overlay_version} is already active")
        return 0
    reused = f", reused {', '.join(result.reused_layers)}" if result.reused_layers else ""
    print(
        f"overlay {overlay.overlay_version} is active (fetched "
        f"{', '.join(result.fetched_layers)}{reused}); restart the app to use it"
    )
    return 0


def _describe(overlay: InstalledOverlay | None) -> dict[str, Any] | None:
    if overlay is None:
        return None
    return {
        "overlay_version": overlay.overlay_version,
        "serial": overlay.serial,
        "llama_cpp_version": overlay.llama_cpp_version,
        "cuda_version": overlay.requirements.cuda_version,
        "layers": dict(overlay.layers),
        "module": str(overlay.module),
        "runtime_lib_dir": str(overlay.runtime_lib_dir),
    }


def status_document(store: OverlayStore) -> dict[str, Any]:
    """The overlay state as `overlay status --json` prints it."""
    accepted = store.accepted_serials()
    vulkan = store.vulkan()
    return {
        "active": _describe(store.active()),
        "previous": _describe(store.previous()),
        "vulkan": None if vulkan is None else vulkan.model_dump(mode="json", by_alias=True),
        "quarantined": store.quarantined(),
        "accepted_serials": {"index": accepted.index, "manifest": accepted.manifest},
    }


def _status(args: argparse.Namespace, store: OverlayStore) -> int:
    import json

    document = status_document(store)
    if args.json:
        print(json.dumps(document, indent=2, sort_keys=True))
        return 0
    for role in ("active", "previous"):
        overlay = document[role]
        if overlay is None:
            print(f"{role}: none" + (" (the app runs on CPU)" if role == "active" else ""))
        else:
            print(
                f"{role}: {overlay['overlay_version']} (CUDA {overlay['cuda_version']}, "
                f"llama_cpp {overlay['llama_cpp_version']}, {overlay['module']})"
            )
    vulkan = document["vulkan"]
    print(
        "vulkan: none"
        if vulkan is None
        else f"vulkan: {vulkan['overlay_version']} (Vulkan {vulkan['requirements']['vulkan_api']}, "
        f"llama_cpp {vulkan['llama_cpp_version']}, {vulkan['module']})"
    )
    for version, reason in sorted(document["quarantined"].items()):
        print(f"quarantined: {version}: {reason}")
    return 0


def run(args: argparse.Namespace) -> int:
    from llamaship.overlay.store import OverlayStore
    from llamaship.paths import DataDirs

    if args.overlay_command == "install":
        return _install(args)
    store = OverlayStore(DataDirs(_settings(args).home))
    if args.overlay_command == "status":
        return _status(args, store)
    if args.overlay_command == "rollback":
        overlay = store.rollback()
        print(f"overlay {overlay.overlay_version} is active again; restart the app to use it")
        return 0
    if args.kind == "vulkan":
        vulkan = store.vulkan()
        store.set_vulkan(None)
        print(
            "no Vulkan overlay was installed"
            if vulkan is None
            else f"Vulkan overlay {vulkan.overlay_version} is removed (the next start runs "
            "without it)"
        )
        return 0
    removed = store.remove()
    if removed is None:
        print("no overlay was active; the app runs on CPU")
    else:
        print(
            f"overlay {removed.overlay_version} is deactivated (the app runs on CPU after a "
            "restart); `llamaship overlay rollback` brings it back"
        )
    return 0

"""Launch-time bootstrap: before anything imports llama_cpp, choose the build and activate it.

Order: clean what an interrupted install left -> quarantine an overlay whose last launch never
became healthy -> detect GPUs (cached) -> decide cpu/cuda -> install the overlay first if the
user consented (AUTO_UPGRADE_GPU) -> probe it once per overlay and driver -> boot sentinel ->
activate -> import llama_cpp and load its backends. Any failure on the way ends on the CPU build.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from llamaship import __version__, sentinel
from llamaship.activate import activate, deactivate, imported_from
from llamaship.boot_state import BootState
from llamaship.config import Settings
from llamaship.decide import Decision, OverlayRequirements, decide, recommend
from llamaship.detect import load_or_detect
from llamaship.errors import LlamashipError
from llamaship.native import LoadedBackends, load_ggml_backends
from llamaship.overlay.store import InstalledOverlay, OverlayStore
from llamaship.paths import DataDirs
from llamaship.probe_cache import ensure_probed

_log = logging.getLogger(__name__)
# A second launch waits this long for the first to finish its decision, then boots on CPU.
LAUNCH_LOCK_TIMEOUT_S = 20.0
AVAILABILITY_TIMEOUT_S = 3.0


@dataclass
class _Plan:
    """The bootstrap's working state while it decides."""

    report: Any
    decision: Decision
    installed: InstalledOverlay | None
    events: list[str]


def detection_versions(installed: InstalledOverlay | None) -> dict[str, str]:
    """Versions that join the detection cache's fingerprint: a new bundle or overlay re-detects."""
    return {"bundle": __version__,
            "overlay": installed.overlay_version if installed else "none"}


def offline_decision(report: Any, store: OverlayStore) -> Decision:
    """The decision from what is installed, without asking the release server."""
    installed = store.active()
    return decide(report, installed.requirements if installed else None, None,
                  _quarantine_reason(store, installed, None))


def bundle_llama_cpp_version() -> str:
    """llama-cpp-python's version in this bundle, read without importing it."""
    try:
        return version("llama_cpp_python")
    except PackageNotFoundError:
        msg = "llama-cpp-python is not installed: reinstall the application"
        raise LlamashipError(msg) from None


def _available(settings: Settings, store: OverlayStore, report: Any,
               events: list[str]) -> OverlayRequirements | None:
    """The overlay the release index offers this machine (signed, checked), if any."""
    from llamaship.overlay.download import DownloadLimits, Fetcher
    from llamaship.overlay.install import Target, find_overlay
    from llamaship.overlay.signing import trusted_keys

    assert settings.release_url is not None
    limits = DownloadLimits(connect_timeout_s=AVAILABILITY_TIMEOUT_S,
                            read_timeout_s=AVAILABILITY_TIMEOUT_S, max_attempts=1)
    try:
        target = Target.current(report, bundle_llama_cpp_version())
        with Fetcher(limits) as fetcher:
            found = find_overlay(settings.release_url, store, target, trusted_keys(settings),
                                 fetcher)
    except (LlamashipError, OSError) as error:
        events.append(f"could not check for a CUDA overlay: {error}")
        return None
    return found.requirements


def _quarantine_reason(store: OverlayStore, installed: InstalledOverlay | None,
                       available: OverlayRequirements | None) -> str | None:
    version_of = installed.overlay_version if installed else (
        available.overlay_version if available else None)
    return store.quarantine_reason(version_of) if version_of else None


def _plan(settings: Settings, dirs: DataDirs, store: OverlayStore) -> _Plan:
    events: list[str] = []
    store.cleanup_leftovers()
    crashed = sentinel.crashed_launch(dirs.state)
    if crashed is not None:
        reason = "the last launch with it never became healthy (it crashed or hung at start)"
        store.quarantine(crashed.overlay_version, reason)
        events.append(f"overlay {crashed.overlay_version} quarantined: {reason}")
    installed = store.active()
    report = load_or_detect(settings, dirs, detection_versions(installed))

    def plan_decision(available: OverlayRequirements | None) -> Decision:
        return decide(report, installed.requirements if installed else None, available,
                      _quarantine_reason(store, installed, available))

    decision = plan_decision(None)
    if decision.variant == "cpu" and report["gpus"] and settings.release_url:
        available = _available(settings, store, report, events)
        decision = plan_decision(available)
        if decision.upgrade_available and settings.auto_upgrade_gpu:
            from llamaship.overlay.install import ensure_overlay

            outcome = ensure_overlay(settings, dirs, report, bundle_llama_cpp_version())
            events.append(f"AUTO_UPGRADE_GPU: {outcome.message}")
            installed = outcome.active
            decision = plan_decision(available)
    return _Plan(report, decision, installed, events)


def _prepare_overlay(plan: _Plan, dirs: DataDirs, store: OverlayStore) -> None:
    """Probe (when needed), mark the sentinel and activate; on failure fall back to CPU."""
    installed = plan.installed
    assert installed is not None
    try:
        ensure_probed(installed, dirs)
        sentinel.mark_booting(dirs.state, installed.overlay_version)
        activate(installed.llama_dir, installed.runtime_lib_dir)
    except LlamashipError as error:
        sentinel.clear(dirs.state)
        store.quarantine(installed.overlay_version, str(error))
        plan.decision = Decision(
            "cpu", f"overlay {installed.overlay_version} was quarantined: {error}; running on "
            "CPU. `llamaship overlay remove` deletes it", False)
        plan.events.append(plan.decision.reason)


def _import_llama(plan: _Plan, dirs: DataDirs, store: OverlayStore) -> tuple[Any, LoadedBackends]:
    """Import llama_cpp (the overlay's when active) and register its backends."""
    installed = plan.installed
    try:
        import llama_cpp

        loaded = load_ggml_backends()
    except (ImportError, OSError, LlamashipError) as error:
        if plan.decision.variant != "cuda" or installed is None:
            raise
        deactivate(installed.llama_dir)
        sentinel.clear(dirs.state)
        reason = f"its llama_cpp failed to load: {error}"
        store.quarantine(installed.overlay_version, reason)
        plan.decision = Decision("cpu", f"overlay {installed.overlay_version} was quarantined: "
                                 f"{reason}; running on CPU", False)
        plan.events.append(plan.decision.reason)
        import llama_cpp

        loaded = load_ggml_backends()
    return llama_cpp, loaded


def boot(settings: Settings) -> BootState:
    """Choose, prepare and import the llama.cpp build this launch runs on."""
    from filelock import FileLock, Timeout

    dirs = DataDirs(settings.home)
    store = OverlayStore(dirs)
    dirs.locks.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(dirs.locks / "launch.lock", timeout=LAUNCH_LOCK_TIMEOUT_S):
            plan = _plan(settings, dirs, store)
            if plan.decision.variant == "cuda":
                _prepare_overlay(plan, dirs, store)
    except Timeout:
        reason = ("another launch held the launch lock for too long (an overlay install?); "
                  "running on CPU this time")
        plan = _Plan(load_or_detect(settings, dirs, detection_versions(None)),
                     Decision("cpu", reason, False), None, [reason])
    llama_cpp, loaded = _import_llama(plan, dirs, store)
    overlay_active = plan.installed is not None and imported_from(plan.installed.llama_dir)
    variant = "cuda" if overlay_active else "cpu"
    n_gpu_layers, n_threads = recommend(plan.report, variant, settings.n_gpu_layers,
                                        settings.n_threads)
    return BootState(
        settings=settings, dirs=dirs, report=dict(plan.report),
        decision=plan.decision.variant, reason=plan.decision.reason,
        upgrade_available=plan.decision.upgrade_available, active_variant=variant,
        overlay_version=plan.installed.overlay_version if overlay_active and plan.installed
        else None,
        llama_cpp_version=llama_cpp.__version__, llama_cpp_path=Path(llama_cpp.__file__),
        gpu_offload=bool(llama_cpp.llama_supports_gpu_offload()),
        n_gpu_layers=n_gpu_layers, n_threads=n_threads, events=plan.events,
        cpu_backend=loaded.cpu_library,
    )


def mark_healthy(state: BootState) -> None:
    """The server answers: this launch did not crash, so clear the boot sentinel."""
    if state.active_variant == "cuda":
        sentinel.clear(state.dirs.state)

"""Launch-time bootstrap: before anything imports llama_cpp, choose the build and activate it.

Order: clean what an interrupted install left -> boot counting: count the earlier launches of
the active overlay that died while its code ran, quarantine it after `BOOT_TRIES` in a row ->
detect GPUs (cached) -> decide cpu/cuda (`llamaship.launch.plan`; a CUDA overlay made for
another llama-cpp-python version is not used) -> install the overlay first if the user
consented (AUTO_UPGRADE_GPU: downloaded and verified outside the launch lock, adopted inside
it) -> probe it once per overlay and driver (not again after the installer's probe) -> record
this launch as booting the overlay -> activate (its CUDA runtime preloaded, its backend
module and the runtime's folder into the environment) -> else, without a CUDA overlay to run,
the Vulkan overlay when the rule allows (its module and device go into the environment) ->
import the bundle's llama_cpp and load its backends, the overlay's module among them. Any
failure on the way ends on the CPU build. The decision, its reason and every event are logged
at INFO and written to the launch status (`llamaship status`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from llamaship.config import Settings
from llamaship.detect import load_or_detect
from llamaship.io.trusted_keys import trusted_keys as resolve_trusted_keys
from llamaship.launch import boot_counting
from llamaship.launch.activate import activate, deactivate
from llamaship.launch.decide import Decision, decide, recommend
from llamaship.launch.log import InstallProgressLog
from llamaship.launch.outcome import BootState, Variant
from llamaship.launch.plan import (
    Plan,
    available_overlay,
    bundle_llama_cpp_version,
    detection_versions,
    other_build,
    quarantine_reason,
)
from llamaship.launch.probe import NoCudaDevice, check_cuda_devices
from llamaship.launch.probe_record import ensure_probed
from llamaship.launch.status import LaunchTracker
from llamaship.launch.vulkan_launch import auto_upgrade_vulkan, prepare_vulkan
from llamaship.native import LoadedBackends, load_ggml_backends
from llamaship.overlay.store import OverlayStore
from llamaship.overlay.vulkan import installed_vulkan
from llamaship.paths import DataDirs
from llamaship_contract.errors import LlamashipError
from llamaship_contract.launch import BootCount
from llamaship_contract.overlay import OverlayRequirements
from llamaship_contract.trust import TrustedKeys

_log = logging.getLogger(__name__)
# A second launch waits this long for the first to finish its decision, then boots on CPU.
LAUNCH_LOCK_TIMEOUT_S = 20.0


def _count_boots(plan: Plan, dirs: DataDirs, store: OverlayStore, tracker: LaunchTracker) -> None:
    """Boot counting for the installed overlays (CUDA, Vulkan): count earlier launches that died
    running each; quarantine one after `BOOT_TRIES` in a row."""
    vulkan = installed_vulkan(store)
    for installed, is_cuda in (
        (plan.installed.overlay_version if plan.installed else None, True),
        (vulkan.overlay_version if vulkan else None, False),
    ):
        if installed is None or store.quarantine_reason(installed) is not None:
            continue
        count = _count_one(plan, dirs, store, tracker, installed)
        if count is not None and is_cuda:
            plan.tries_left, plan.last_failure = count.tries_left, count.last_failure


def _count_one(
    plan: Plan, dirs: DataDirs, store: OverlayStore, tracker: LaunchTracker, version_of: str
) -> BootCount | None:
    """Count overlay `version_of`'s failed launches; None once it is quarantined."""
    assessment = boot_counting.assess(dirs, version_of, tracker.me)
    count = assessment.count
    for failed in assessment.counted:
        during = (
            "loading its first model" + (f" {Path(failed.model).name}" if failed.model else "")
            if failed.phase == "loading"
            else "starting (loading the overlay's backend module)"
        )
        plan.note(
            f"the launch of {failed.started:%Y-%m-%d %H:%M:%S} UTC (pid {failed.pid}) with "
            f"overlay {version_of} died while {during}: {count.tries_left} of "
            f"{count.tries} tries left"
        )
    if assessment.quarantine:
        reason = (
            f"{count.tries} launches in a row with it died before they were healthy "
            "(a crash or hang while starting or loading a model)"
        )
        store.quarantine(version_of, reason)
        boot_counting.forget(dirs, version_of)
        plan.note(f"overlay {version_of} quarantined: {reason}")
        return None
    return count


def _plan(
    settings: Settings,
    dirs: DataDirs,
    store: OverlayStore,
    keys: TrustedKeys,
    tracker: LaunchTracker,
    events: list[str],
    *,
    after_install: bool = False,
    available: OverlayRequirements | None = None,
    cuda_refused: str | None = None,
) -> Plan:
    """Decide (call under the launch lock); `install` says AUTO_UPGRADE_GPU should run first.
    After an install, `available` and `cuda_refused` are the first decision's release check."""
    store.cleanup_leftovers()
    installed = store.active()
    report = load_or_detect(settings, dirs, detection_versions(installed))
    plan = Plan(report, Decision("cpu", "", False), installed, events, available)
    plan.cuda_refused = cuda_refused
    foreign = other_build(installed)
    if foreign is not None:  # its module cannot load into this bundle's ggml
        plan.note(foreign)
        plan.installed = None
    _count_boots(plan, dirs, store, tracker)

    def plan_decision() -> Decision:
        return decide(
            report,
            plan.installed.requirements if plan.installed else None,
            plan.available,
            quarantine_reason(store, plan.installed, plan.available),
            plan.unchecked,
            plan.cuda_refused,
        )

    plan.decision = plan_decision()
    if not after_install and plan.decision.variant == "cpu" and report.gpus:
        plan.available = available_overlay(settings, dirs, store, plan, keys)
        plan.decision = plan_decision()
        plan.install = plan.decision.upgrade_available and settings.auto_upgrade_gpu
    return plan


def _auto_upgrade(settings: Settings, dirs: DataDirs, plan: Plan, keys: TrustedKeys) -> None:
    """AUTO_UPGRADE_GPU: download, verify, probe and install (the installer's own lock only)."""
    from llamaship.overlay.install import ensure_overlay

    if plan.vulkan_offer is not None:
        auto_upgrade_vulkan(settings, dirs, plan, keys, plan.vulkan_offer)
        return
    _log.info(
        "AUTO_UPGRADE_GPU: installing overlay %s before the launch continues",
        plan.available.overlay_version if plan.available else "?",
    )
    outcome = ensure_overlay(
        settings,
        dirs,
        plan.report,
        bundle_llama_cpp_version(),
        InstallProgressLog(),
        trusted_keys=keys,
    )
    plan.note(f"AUTO_UPGRADE_GPU: {outcome.message}")


def _fall_back_to_cpu(
    plan: Plan,
    tracker: LaunchTracker,
    reason: str,
    *,
    quarantine: tuple[OverlayStore, str] | None = None,
) -> None:
    """Run this launch on the CPU build: it no longer counts against an overlay, and `reason`
    becomes the decision's (logged, one of the launch's events). `quarantine=(store, problem)`
    first quarantines the planned overlay for `problem`."""
    tracker.counting(None)
    if quarantine is not None and plan.installed is not None:
        store, problem = quarantine
        store.quarantine(plan.installed.overlay_version, problem)
    plan.decision = Decision("cpu", reason, False)
    plan.note(reason)


def _prepare_overlay(
    plan: Plan, dirs: DataDirs, store: OverlayStore, tracker: LaunchTracker
) -> None:
    """Probe (when needed), record the launch as booting it and activate; else fall back."""
    installed = plan.installed
    assert installed is not None
    try:
        record = ensure_probed(installed, dirs)
        for note in check_cuda_devices(plan.report.gpus, record.result):
            plan.note(note)
        tracker.counting(installed.overlay_version)
        activate(installed.module, installed.runtime_lib_dir)
    except NoCudaDevice as error:  # the driver's fault, not the overlay's: no quarantine
        _fall_back_to_cpu(plan, tracker, str(error))
    except LlamashipError as error:
        _fall_back_to_cpu(
            plan,
            tracker,
            f"overlay {installed.overlay_version} was quarantined: {error}; running on "
            "CPU. `llamaship overlay remove` deletes it",
            quarantine=(store, str(error)),
        )


def _import_llama(
    plan: Plan, store: OverlayStore, tracker: LaunchTracker
) -> tuple[Any, LoadedBackends]:
    """Import the bundle's llama_cpp and register its backends (with an active overlay's
    module, named in the environment)."""
    installed = plan.installed
    try:
        import llama_cpp

        loaded = load_ggml_backends()
    except (ImportError, OSError, LlamashipError) as error:
        if plan.decision.variant != "cuda" or installed is None:
            raise
        deactivate(installed.module, installed.runtime_lib_dir)
        problem = f"llama.cpp failed to load with it: {error}"
        _fall_back_to_cpu(
            plan,
            tracker,
            f"overlay {installed.overlay_version} was quarantined: {problem}; running on CPU",
            quarantine=(store, problem),
        )
        import llama_cpp

        loaded = load_ggml_backends()
    return llama_cpp, loaded


@contextmanager
def _launch_lock(dirs: DataDirs) -> Iterator[None]:
    from filelock import FileLock

    dirs.locks.mkdir(parents=True, exist_ok=True)
    with FileLock(dirs.locks / "launch.lock", timeout=LAUNCH_LOCK_TIMEOUT_S):
        yield


def _choose(
    settings: Settings,
    dirs: DataDirs,
    store: OverlayStore,
    keys: TrustedKeys,
    tracker: LaunchTracker,
) -> Plan:
    """Decide and prepare under the launch lock; an install runs between two holds of it."""
    from filelock import Timeout

    events: list[str] = []
    try:
        with _launch_lock(dirs):
            plan = _plan(settings, dirs, store, keys, tracker, events)
            if not plan.install and plan.decision.variant == "cuda":
                _prepare_overlay(plan, dirs, store, tracker)
            if not plan.install and plan.decision.variant == "cpu":
                prepare_vulkan(plan, settings, store, tracker, keys)
        if plan.install:
            _auto_upgrade(settings, dirs, plan, keys)
            with _launch_lock(dirs):  # adopt what is active now (this or another install)
                plan = _plan(
                    settings,
                    dirs,
                    store,
                    keys,
                    tracker,
                    events,
                    after_install=True,
                    available=plan.available,
                    cuda_refused=plan.cuda_refused,
                )
                if plan.decision.variant == "cuda":
                    _prepare_overlay(plan, dirs, store, tracker)
                if plan.decision.variant == "cpu":
                    prepare_vulkan(plan, settings, store, tracker, keys)
    except Timeout:
        report = load_or_detect(settings, dirs, detection_versions(None))
        plan = Plan(report, Decision("cpu", "", False), None, events)
        _fall_back_to_cpu(
            plan,
            tracker,
            "another launch held the launch lock for too long (an overlay install?); "
            "running on CPU this time",
        )
    return plan


def boot(
    settings: Settings,
    trusted_keys: TrustedKeys | Sequence[str] | None = None,
    tracker: LaunchTracker | None = None,
) -> BootState:
    """Choose, prepare and import the llama.cpp build this launch runs on.

    `trusted_keys`: the release keys overlays must be signed with (default: the bundled ones).
    `tracker` follows this launch's phases (default: a new one for this process).
    """

    keys = resolve_trusted_keys(trusted_keys)
    dirs = DataDirs(settings.home)
    store = OverlayStore(dirs)
    tracker = tracker or LaunchTracker(dirs)
    plan = _choose(settings, dirs, store, keys, tracker)
    _log.info("decision: %s: %s", plan.decision.variant, plan.decision.reason)

    def explain(
        variant: str | None, overlay_version: str | None, llama_cpp_version: str | None
    ) -> None:
        tracker.explain(
            decision=plan.decision.variant,
            reason=plan.decision.reason,
            upgrade_available=plan.decision.upgrade_available,
            variant=variant,
            overlay_version=overlay_version,
            llama_cpp_version=llama_cpp_version,
            events=plan.events,
            tries_left=plan.tries_left,
        )

    explain(None, _planned_overlay(plan), None)
    llama_cpp, loaded = _import_llama(plan, store, tracker)
    variant, overlay_version = _running(plan, loaded, store, tracker)
    _log.info(
        "running llama.cpp %s (%s) from %s",
        llama_cpp.__version__,
        variant,
        Path(llama_cpp.__file__).parent,
    )
    explain(variant, overlay_version, llama_cpp.__version__)
    n_gpu_layers, n_threads = recommend(
        plan.report, variant, settings.n_gpu_layers, settings.n_threads
    )
    return BootState(
        settings=settings,
        dirs=dirs,
        report=plan.report,
        decision=plan.decision.variant,
        reason=plan.decision.reason,
        upgrade_available=plan.decision.upgrade_available,
        active_variant=variant,
        overlay_version=overlay_version,
        llama_cpp_version=llama_cpp.__version__,
        llama_cpp_path=Path(llama_cpp.__file__),
        gpu_offload=bool(llama_cpp.llama_supports_gpu_offload()),
        n_gpu_layers=n_gpu_layers,
        n_threads=n_threads,
        events=plan.events,
        cpu_backend=loaded.cpu_library,
        trusted_keys=keys,
        health=tracker,
        last_failure=plan.last_failure if variant == "cuda" else None,
        measure=plan.measure,
        measurement=plan.measurement,
    )


def _planned_overlay(plan: Plan) -> str | None:
    if plan.decision.variant == "cuda" and plan.installed:
        return plan.installed.overlay_version
    return (
        plan.vulkan.overlay_version if plan.decision.variant == "vulkan" and plan.vulkan else None
    )


def _running(
    plan: Plan, loaded: LoadedBackends, store: OverlayStore, tracker: LaunchTracker
) -> tuple[Variant, str | None]:
    """The variant this process runs on now, and its overlay; a backend module that ggml did
    not load quarantines its overlay (the launch goes on, on the CPU build)."""
    installed = plan.installed
    if plan.decision.variant == "cuda" and installed is not None:
        if "CUDA" in loaded.backends:
            return "cuda", installed.overlay_version
        deactivate(installed.module, installed.runtime_lib_dir)
        problem = f"llama.cpp did not load its backend module {installed.module.name}"
        _fall_back_to_cpu(
            plan,
            tracker,
            f"overlay {installed.overlay_version} was quarantined: {problem}; running on CPU",
            quarantine=(store, problem),
        )
    if plan.vulkan is not None:
        if "Vulkan" in loaded.backends:
            return "vulkan", plan.vulkan.overlay_version
        problem = f"llama.cpp did not load its backend module {plan.vulkan.module.name}"
        _fall_back_to_cpu(
            plan,
            tracker,
            f"Vulkan overlay {plan.vulkan.overlay_version} was quarantined: {problem}; "
            "running on CPU",
        )
        store.quarantine(plan.vulkan.overlay_version, problem)
    tracker.counting(None)
    return "cpu", None


def mark_healthy(state: BootState) -> None:
    """The active variant generated tokens outside the engine's own calls (`llamaship bench`)."""
    state.health.generated()

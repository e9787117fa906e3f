"""What the launch decision reads, and its working state: the detection report, the installed
overlays, the release index's offer (checked at most once a day), quarantine reasons.

`llamaship.launch.bootstrap` runs the launch; `detect` and `fit` ask the same questions here
without activating anything.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from llamaship import __version__
from llamaship.config import Settings
from llamaship.launch.decide import Decision, decide
from llamaship.measure.run import MeasureRequest
from llamaship.overlay.installed import InstalledOverlay
from llamaship.overlay.store import OverlayStore
from llamaship.overlay.vulkan import VulkanOverlay
from llamaship.paths import DataDirs
from llamaship_contract.detection import DetectionReport
from llamaship_contract.errors import LlamashipError
from llamaship_contract.launch import LaunchProcess
from llamaship_contract.measure import VariantMeasurement
from llamaship_contract.overlay import OverlayRequirements, VulkanRequirements
from llamaship_contract.trust import TrustedKeys

if TYPE_CHECKING:
    from llamaship.io.fetch import Fetcher

_log = logging.getLogger("llamaship.launch.bootstrap")
AVAILABILITY_TIMEOUT_S = 3.0


@dataclass
class Plan:
    """The bootstrap's working state while it decides."""

    report: DetectionReport
    decision: Decision
    installed: InstalledOverlay | None
    events: list[str]
    available: OverlayRequirements | None = None
    vulkan: VulkanOverlay | None = None
    vulkan_offer: int | None = None
    """AUTO_UPGRADE_GPU installs the Vulkan overlay offered for this device first."""
    measure: MeasureRequest | None = None
    """The Vulkan variant is usable but unmeasured: the backend measures it once serving."""
    measurement: VariantMeasurement | None = None
    install: bool = False
    tries_left: int | None = None
    last_failure: LaunchProcess | None = None
    unchecked: str | None = None
    """Why no release index was read (the decision says so instead of "none offers one")."""
    cuda_refused: str | None = None
    """Why the release index offers no CUDA overlay this machine can run (the one rule's
    problems: a Pascal GPU's compute capability, an old driver), read now or within the day."""

    def note(self, event: str) -> None:
        """An event of this launch: logged now, shown by /api/capabilities and `status`."""
        _log.info("%s", event)
        self.events.append(event)


def detection_versions(installed: InstalledOverlay | None) -> dict[str, str]:
    """Versions that join the detection cache's fingerprint: a new bundle or overlay re-detects."""
    return {"bundle": __version__, "overlay": installed.overlay_version if installed else "none"}


def offline_decision(report: DetectionReport, store: OverlayStore) -> Decision:
    """The decision from what is installed, without asking the release server."""
    installed = store.active()
    return decide(
        report,
        installed.requirements if installed else None,
        None,
        quarantine_reason(store, installed, None),
        "no release index was checked (offline decision)",
    )


def release_decision(
    settings: Settings,
    report: DetectionReport,
    keys: TrustedKeys | Sequence[str] | None = None,
) -> Decision:
    """The decision a launch would make now, the release index checked as a launch checks it
    (at most once a day, `LLAMASHIP_RELEASE_CHECK`), without installing or activating."""
    from llamaship.io import trusted_keys as signing

    dirs = DataDirs(settings.home)
    store = OverlayStore(dirs)
    plan = Plan(report, Decision("cpu", "", False), store.active(), [])
    installed = plan.installed
    available = None
    if installed is None and report.gpus:
        available = available_overlay(settings, dirs, store, plan, signing.trusted_keys(keys))
    return decide(
        report,
        installed.requirements if installed else None,
        available,
        quarantine_reason(store, installed, available),
        plan.unchecked,
        plan.cuda_refused,
    )


def bundle_llama_cpp_version() -> str:
    """llama-cpp-python's version in this bundle, read without importing it."""
    try:
        return version("llama_cpp_python")
    except PackageNotFoundError:
        msg = "llama-cpp-python is not installed: reinstall the application"
        raise LlamashipError(msg) from None


def other_build(installed: InstalledOverlay | VulkanOverlay | None) -> str | None:
    """Why the bundle's ggml cannot load `installed`'s backend module (a CUDA or Vulkan overlay
    made for another llama-cpp-python version), or None when it can."""
    if installed is None or installed.llama_cpp_version == bundle_llama_cpp_version():
        return None
    kind = "Vulkan" if isinstance(installed, VulkanOverlay) else "CUDA"
    return (
        f"{kind} overlay {installed.overlay_version} was made for llama-cpp-python "
        f"{installed.llama_cpp_version}, this bundle runs {bundle_llama_cpp_version()}: it is "
        "not used until the overlay for this version is installed"
    )


def available_overlay(
    settings: Settings,
    dirs: DataDirs,
    store: OverlayStore,
    plan: Plan,
    keys: TrustedKeys,
) -> OverlayRequirements | None:
    """The overlay the release index offers this machine (signed, checked), if any: asked at
    most once a day (`release_check`); `plan.unchecked` says why it was not asked,
    `plan.cuda_refused` why it offers none this machine can run."""
    from llamaship.launch.release_check import Refusal, check_release
    from llamaship.overlay.select import (
        IncompatibleOverlay,
        NoMatchingOverlay,
        Target,
        find_overlay,
    )

    target = Target.current(plan.report, bundle_llama_cpp_version())

    def lookup(url: str) -> OverlayRequirements | Refusal:
        try:
            with _launch_fetcher() as fetcher:
                return find_overlay(url, store, target, keys, fetcher).record().requirements
        except (NoMatchingOverlay, IncompatibleOverlay) as error:
            plan.note(f"the release index offers no CUDA overlay for this machine: {error}")
            return Refusal(str(error))

    fingerprint = json.dumps(
        [
            __version__,
            target.llama_cpp_version,
            plan.report.cuda_driver_version,
            sorted(gpu.compute_capability for gpu in plan.report.gpus),
        ]
    )
    check = check_release(
        settings, dirs.state, fingerprint, lookup, kind="cuda", model=OverlayRequirements
    )
    if check.note is not None:
        plan.note(check.note)
    plan.unchecked, plan.cuda_refused = check.unchecked, check.refused
    return check.available


def _launch_fetcher() -> Fetcher:
    """A fetcher for the launch's index check: one attempt, every read within
    AVAILABILITY_TIMEOUT_S in all (a slow server never holds up the launch)."""
    from llamaship.io.fetch import Fetcher
    from llamaship.io.http_session import DownloadLimits

    limits = DownloadLimits(
        connect_timeout_s=AVAILABILITY_TIMEOUT_S,
        read_timeout_s=AVAILABILITY_TIMEOUT_S,
        max_attempts=1,
    )
    return Fetcher(limits, deadline_s=AVAILABILITY_TIMEOUT_S)


def available_vulkan(
    settings: Settings,
    dirs: DataDirs,
    store: OverlayStore,
    plan: Plan,
    keys: TrustedKeys,
    device: int,
) -> VulkanRequirements | None:
    """The Vulkan overlay the release index offers for the chosen `device`, if any: asked at
    most once a day, like the CUDA overlay (`release_check`); never a quarantined one."""
    from llamaship.launch.decide_vulkan import vulkan_driver
    from llamaship.launch.release_check import Refusal, check_release
    from llamaship.overlay.select import (
        IncompatibleOverlay,
        NoMatchingOverlay,
        Target,
        find_overlay,
    )
    from llamaship_contract.overlay import vulkan_requirements

    try:
        target = Target.current(plan.report, bundle_llama_cpp_version(), vulkan_device=device)
    except LlamashipError as error:  # no overlays for this OS or processor
        plan.note(str(error))
        return None

    def lookup(url: str) -> VulkanRequirements | Refusal:
        try:
            with _launch_fetcher() as fetcher:
                found = find_overlay(url, store, target, keys, fetcher, kind="vulkan")
        except (NoMatchingOverlay, IncompatibleOverlay) as error:
            plan.note(f"the release index offers no Vulkan overlay for this machine: {error}")
            return Refusal(str(error))
        return vulkan_requirements(found.entry)

    fingerprint = json.dumps(
        [__version__, target.llama_cpp_version, vulkan_driver(plan.report, device)]
    )
    check = check_release(
        settings, dirs.state, fingerprint, lookup, kind="vulkan", model=VulkanRequirements
    )
    if check.note is not None:
        plan.note(check.note)
    offered = check.available
    if offered is None or store.quarantine_reason(offered.overlay_version) is not None:
        return None
    return offered


def quarantine_reason(
    store: OverlayStore, installed: InstalledOverlay | None, available: OverlayRequirements | None
) -> str | None:
    version_of = (
        installed.overlay_version
        if installed
        else (available.overlay_version if available else None)
    )
    return store.quarantine_reason(version_of) if version_of else None

"""The launch's Vulkan part: run the installed Vulkan overlay when the rule and the measured
choice allow (its module and device go into the environment every llama.cpp process of the
launch inherits), or offer one from the release index, installing it first when
AUTO_UPGRADE_GPU says so. The bootstrap asks only when no CUDA overlay runs.
"""

from __future__ import annotations

import os

from llamaship.config import Settings
from llamaship.detect.vulkan_choice import vulkan_device_choice
from llamaship.launch.decide import UPGRADE_HINT, Decision, recommend
from llamaship.launch.decide_vulkan import decide_vulkan, vulkan_driver
from llamaship.launch.launch_env import set_for_launch
from llamaship.launch.log import InstallProgressLog
from llamaship.launch.plan import Plan, available_vulkan, bundle_llama_cpp_version, other_build
from llamaship.launch.status import LaunchTracker
from llamaship.measure.choice import measured_choice
from llamaship.measure.run import vulkan_setup
from llamaship.overlay.store import OverlayStore
from llamaship.overlay.vulkan import installed_vulkan, vulkan_environment
from llamaship.paths import DataDirs
from llamaship_contract.errors import LlamashipError
from llamaship_contract.trust import TrustedKeys


def prepare_vulkan(
    plan: Plan, settings: Settings, store: OverlayStore, tracker: LaunchTracker, keys: TrustedKeys
) -> None:
    """Without a CUDA overlay to run: the Vulkan overlay when the rule says so (its module and
    device go into the environment every llama.cpp process of this launch inherits); without
    one installed for this bundle's llama-cpp-python, whether the release index offers one for
    the chosen device."""
    overlay = installed_vulkan(store)
    choice = vulkan_device_choice(plan.report, settings)
    foreign = other_build(overlay)
    if foreign is not None:  # its module cannot load into this bundle's ggml
        if plan.decision.upgrade_available:  # the CUDA offer's reason stays the decision's
            plan.note(foreign)
        else:
            _stay_on_cpu(plan, foreign)
    if overlay is None or foreign is not None:
        if choice.device_index is not None and not plan.decision.upgrade_available:
            missing = foreign or "no Vulkan overlay installed"
            _offer_vulkan(plan, settings, store, keys, choice.device_index, missing)
        return
    verdict = decide_vulkan(
        plan.report,
        overlay.pointer,
        choice,
        store.quarantine_reason(overlay.overlay_version),
    )
    if not verdict.use or choice.device_index is None:
        _stay_on_cpu(plan, verdict.reason)
        return
    measured = measured_choice(
        settings,
        DataDirs(settings.home),
        vulkan_setup(overlay.module, choice.device_index),
        vulkan_driver(plan.report, choice.device_index),
        recommend(plan.report, "vulkan", settings.n_gpu_layers, settings.n_threads)[1],
    )
    plan.measure, plan.measurement = measured.measure, measured.measurement
    if measured.variant == "cpu":
        _stay_on_cpu(plan, measured.reason or f"Vulkan overlay {overlay.overlay_version} is unused")
        return
    if measured.reason:
        plan.note(measured.reason)
    set_for_launch(vulkan_environment(overlay, choice), os.environ)
    tracker.counting(overlay.overlay_version)
    plan.vulkan = overlay
    reason = verdict.reason + _not_cuda(plan)
    plan.decision = Decision("vulkan", reason, plan.decision.upgrade_available)


def _not_cuda(plan: Plan) -> str:
    """Why this machine's NVIDIA GPU gets no CUDA overlay (a Pascal GPU's compute capability,
    by the release index's CUDA overlay), as a clause of a Vulkan reason; "" when unknown."""
    return f"; no CUDA overlay fits: {plan.cuda_refused}" if plan.cuda_refused else ""


def _offer_vulkan(
    plan: Plan,
    settings: Settings,
    store: OverlayStore,
    keys: TrustedKeys,
    device: int,
    missing: str,
) -> None:
    """The release index's Vulkan overlay for `device` (checked at most once a day): offered
    as an upgrade, as a CUDA overlay is (the page, `status` and the API show it). `missing`
    says why no installed Vulkan overlay runs."""
    offered = available_vulkan(settings, DataDirs(settings.home), store, plan, keys, device)
    if offered is None:
        return
    if settings.auto_upgrade_gpu:
        plan.install, plan.vulkan_offer = True, device
    plan.decision = Decision(
        "cpu",
        f"{missing}; upgrade available ({UPGRADE_HINT}): overlay {offered.overlay_version} "
        f"runs on {vulkan_driver(plan.report, device)}{_not_cuda(plan)}; running on CPU "
        "until it is installed",
        True,
    )


def _stay_on_cpu(plan: Plan, reason: str) -> None:
    """An installed Vulkan overlay is not used: its reason becomes the decision's."""
    plan.note(reason)
    plan.decision = Decision("cpu", f"{reason}; running on CPU", plan.decision.upgrade_available)


def auto_upgrade_vulkan(
    settings: Settings, dirs: DataDirs, plan: Plan, keys: TrustedKeys, device: int
) -> None:
    """AUTO_UPGRADE_GPU for the Vulkan overlay offered for `device`; never raises for an
    expected failure (the launch goes on with what is installed)."""
    from llamaship.overlay.install import InstallOptions
    from llamaship.overlay.select import Target
    from llamaship.overlay.vulkan import VulkanInstaller

    assert settings.release_url is not None  # the offer came from it
    try:
        target = Target.current(plan.report, bundle_llama_cpp_version(), vulkan_device=device)
        installer = VulkanInstaller(
            dirs,
            keys,
            choice=vulkan_device_choice(plan.report, settings),
            progress=InstallProgressLog(),
            options=InstallOptions(lock_timeout_s=0),
        )
        overlay = installer.install_vulkan(settings.release_url, target, skip_quarantined=True)
    except (LlamashipError, OSError) as error:
        plan.note(f"AUTO_UPGRADE_GPU: the Vulkan overlay was not installed: {error}")
        return
    plan.note(f"AUTO_UPGRADE_GPU: installed Vulkan overlay {overlay.overlay_version}")

"""Whether this launch runs on the installed Vulkan overlay: one pure rule, with its reason.

The launch asks it only when no CUDA overlay runs (CUDA ranks first for NVIDIA GPUs). The
Vulkan overlay runs when it is installed and not quarantined, a Vulkan device is chosen
(`llamaship.detect.vulkan_choice`: never a software renderer unless named), the one
compatibility rule accepts that device, and a measurement against the CPU build did not find
it slower (`measured_slower`: the reason with the numbers, or None when unmeasured or faster).
"""

from __future__ import annotations

from dataclasses import dataclass

from llamaship.compat import Unusable, judge_vulkan
from llamaship.detect.vulkan_choice import VulkanChoice
from llamaship_contract.detection import DetectionReport
from llamaship_contract.state import VulkanPointer


@dataclass(frozen=True)
class VulkanDecision:
    """Run on Vulkan (`use`) or not, and why, for people."""

    use: bool
    reason: str


def vulkan_driver(report: DetectionReport, device_index: int) -> str:
    """What a measurement on the device is cached under: its name, driver and API version."""
    for device in report.vulkan.devices:
        if device.index == device_index:
            return f"{device.name} / driver {device.driver_version} / Vulkan {device.api_version}"
    return f"Vulkan device {device_index}"


def decide_vulkan(
    report: DetectionReport,
    installed: VulkanPointer | None,
    choice: VulkanChoice,
    quarantine_reason: str | None,
    measured_slower: str | None = None,
) -> VulkanDecision:
    """The Vulkan overlay's part of the launch decision."""
    if installed is None:
        return VulkanDecision(False, "no Vulkan overlay is installed")
    version = installed.overlay_version
    if quarantine_reason is not None:
        return VulkanDecision(
            False, f"Vulkan overlay {version} was quarantined: {quarantine_reason}"
        )
    if choice.device_index is None:
        return VulkanDecision(False, f"Vulkan overlay {version} is not used: {choice.reason}")
    verdict = judge_vulkan(report, installed.requirements, choice.device_index)
    if isinstance(verdict, Unusable):
        problems = "; ".join(verdict.problems)
        return VulkanDecision(False, f"Vulkan overlay {version} cannot run here: {problems}")
    if measured_slower is not None:
        return VulkanDecision(False, measured_slower)
    return VulkanDecision(True, f"running on the Vulkan overlay {version}: {choice.reason}")

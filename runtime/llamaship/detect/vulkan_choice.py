"""Which Vulkan device llama.cpp uses: one pure rule, and the environment that tells ggml.

By default (`LLAMASHIP_VULKAN_DEVICE=auto`) a discrete GPU wins over an integrated one, then a
virtual one; among equals the one with more memory, then the first listed. A software renderer
(device type "cpu": lavapipe, llvmpipe, SwiftShader) is never chosen on its own: naming it (its
index or name) is the explicit consent that lets tests and CI run the real Vulkan path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from llamaship.config import Settings
    from llamaship_contract.detection import DetectionReport, VulkanDevice

SETTING = "LLAMASHIP_VULKAN_DEVICE"
VISIBLE_DEVICES = "GGML_VK_VISIBLE_DEVICES"
_PREFERENCE = {"discrete": 0, "integrated": 1, "virtual": 2, "other": 3, "cpu": 4}


class VulkanChoice(NamedTuple):
    """The device's index in the loader's list (None: use no Vulkan device) and why, for people."""

    device_index: int | None
    reason: str


def _rank(device: VulkanDevice) -> tuple[int, int, int]:
    return (_PREFERENCE[device.device_type], -device.memory_mb, device.index)


def _label(device: VulkanDevice) -> str:
    kind = "software renderer" if device.device_type == "cpu" else f"{device.device_type} GPU"
    return f"Vulkan device {device.index} ({device.name}, {kind}, {device.memory_mb} MB)"


def _listing(devices: tuple[VulkanDevice, ...]) -> str:
    return "; ".join(f"{device.index}: {device.name}" for device in devices)


def _automatic(devices: tuple[VulkanDevice, ...]) -> VulkanChoice:
    hardware = sorted((device for device in devices if device.device_type != "cpu"), key=_rank)
    if not hardware:
        index = devices[0].index
        what = (
            f"the only Vulkan device ({_listing(devices)}) is a software renderer, which is"
            if len(devices) == 1
            else f"the only Vulkan devices ({_listing(devices)}) are software renderers, which are"
        )
        return VulkanChoice(
            None, f"{what} never chosen on its own; {SETTING}={index} uses it anyway"
        )
    best = hardware[0]
    others = [device for device in hardware[1:] if _rank(device)[0] > _rank(best)[0]]
    over = f", preferred over {', '.join(map(_label, others))}" if others else ""
    return VulkanChoice(best.index, f"using {_label(best)}{over}")


def _named(devices: tuple[VulkanDevice, ...], setting: str) -> VulkanChoice:
    if setting.isdigit():
        matches = [device for device in devices if device.index == int(setting)]
    else:
        wanted = setting.casefold()
        matches = [device for device in devices if device.name.casefold() == wanted] or [
            device for device in devices if wanted in device.name.casefold()
        ]
    if not matches:
        return VulkanChoice(
            None,
            f"{SETTING}={setting!r} names no Vulkan device (the devices are "
            f"{_listing(devices)}); not using Vulkan",
        )
    chosen = min(matches, key=_rank)
    return VulkanChoice(chosen.index, f"using {_label(chosen)}, as {SETTING}={setting!r} asks")


def vulkan_device_choice(report: DetectionReport, settings: Settings) -> VulkanChoice:
    """The Vulkan device llama.cpp should use on this machine, or None, and why."""
    devices = report.vulkan.devices
    setting = settings.vulkan_device
    if setting == "none":
        return VulkanChoice(None, f"{SETTING}=none: not using Vulkan")
    if not devices:
        why = f" ({report.vulkan.errors[-1]})" if report.vulkan.errors else ""
        return VulkanChoice(None, f"no Vulkan device detected{why}")
    return _automatic(devices) if setting == "auto" else _named(devices, setting)


def vulkan_environment(choice: VulkanChoice) -> dict[str, str]:
    """The environment every llama.cpp process gets for `choice`.

    Without a device the list is empty, so a llama.cpp that loads its Vulkan backend uses no
    Vulkan device, rather than ggml's own default (every discrete and integrated GPU).
    """
    return {VISIBLE_DEVICES: "" if choice.device_index is None else str(choice.device_index)}

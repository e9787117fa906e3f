"""The Vulkan device rule: discrete over integrated, software renderers only when named, and
the GGML_VK_VISIBLE_DEVICES value every llama.cpp process gets (reports injected)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamaship.config import Settings, resolve_settings
from llamaship.detect.vulkan_choice import VulkanChoice, vulkan_device_choice, vulkan_environment
from llamaship_contract.detection import DetectionReport, VulkanDevice, VulkanReport


def device(index: int, name: str, kind: str, memory_mb: int = 8192) -> VulkanDevice:
    return VulkanDevice.model_validate(
        {
            "index": index,
            "name": name,
            "vendor_id": 0x1002,
            "vendor": "AMD",
            "device_id": 0x73BF,
            "device_type": kind,
            "api_version": "1.3.260",
            "driver_version": "2.0.279",
            "memory_mb": memory_mb,
        }
    )


INTEGRATED = device(0, "AMD Radeon Graphics (RADV RENOIR)", "integrated", 2048)
DISCRETE = device(1, "AMD Radeon RX 6800 XT (RADV NAVI21)", "discrete", 16384)
LLVMPIPE = device(2, "llvmpipe (LLVM 15.0.6, 256 bits)", "cpu", 2048)


def report(*devices: VulkanDevice, errors: tuple[str, ...] = ()) -> DetectionReport:
    source = "loader" if devices else "none"
    return DetectionReport(
        source="none", vulkan=VulkanReport(source=source, devices=devices, errors=errors)
    )


def settings(tmp_path: Path, value: str | None = None) -> Settings:
    env = {"LLAMASHIP_HOME": str(tmp_path)}
    if value is not None:
        env["LLAMASHIP_VULKAN_DEVICE"] = value
    return resolve_settings(env=env)


def test_discrete_wins_over_integrated_whatever_the_order(tmp_path: Path) -> None:
    choice = vulkan_device_choice(report(INTEGRATED, DISCRETE, LLVMPIPE), settings(tmp_path))

    assert choice.device_index == 1
    assert choice.reason == (
        "using Vulkan device 1 (AMD Radeon RX 6800 XT (RADV NAVI21), discrete GPU, 16384 MB), "
        "preferred over Vulkan device 0 (AMD Radeon Graphics (RADV RENOIR), integrated GPU, "
        "2048 MB)"
    )
    assert vulkan_environment(choice) == {"GGML_VK_VISIBLE_DEVICES": "1"}


def test_among_equals_more_memory_then_the_first_listed_wins(tmp_path: Path) -> None:
    small, large = device(0, "Small", "discrete", 4096), device(1, "Large", "discrete", 12288)
    twin = device(2, "Large twin", "discrete", 12288)

    assert vulkan_device_choice(report(small, large, twin), settings(tmp_path)).device_index == 1


def test_an_integrated_gpu_is_used_when_it_is_the_only_hardware(tmp_path: Path) -> None:
    choice = vulkan_device_choice(report(LLVMPIPE, INTEGRATED), settings(tmp_path))

    assert choice.device_index == 0
    assert "integrated GPU" in choice.reason


@pytest.mark.parametrize("value", [None, "auto", "AUTO", " "])
def test_a_software_renderer_is_never_chosen_on_its_own(tmp_path: Path, value: str | None) -> None:
    only_software = report(device(0, "llvmpipe (LLVM 15.0.6, 256 bits)", "cpu", 2048))

    choice = vulkan_device_choice(only_software, settings(tmp_path, value))

    assert choice == VulkanChoice(
        None,
        "the only Vulkan device (0: llvmpipe (LLVM 15.0.6, 256 bits)) is a software renderer, "
        "which is never chosen on its own; LLAMASHIP_VULKAN_DEVICE=0 uses it anyway",
    )
    assert vulkan_environment(choice) == {"GGML_VK_VISIBLE_DEVICES": ""}


@pytest.mark.parametrize("value", ["2", "llvmpipe", "LLVMPIPE (llvm 15.0.6, 256 BITS)"])
def test_naming_a_software_renderer_chooses_it(tmp_path: Path, value: str) -> None:
    choice = vulkan_device_choice(report(INTEGRATED, DISCRETE, LLVMPIPE), settings(tmp_path, value))

    assert choice.device_index == 2
    assert choice.reason.startswith("using Vulkan device 2 (llvmpipe (LLVM 15.0.6, 256 bits), ")
    assert f"as LLAMASHIP_VULKAN_DEVICE={value!r} asks" in choice.reason
    assert vulkan_environment(choice) == {"GGML_VK_VISIBLE_DEVICES": "2"}


@pytest.mark.parametrize(("value", "index"), [("0", 0), ("renoir", 0), ("RADV", 1)])
def test_the_setting_chooses_another_gpu(tmp_path: Path, value: str, index: int) -> None:
    """A name matching several devices takes the best of them (RADV: the discrete one)."""
    choice = vulkan_device_choice(report(INTEGRATED, DISCRETE), settings(tmp_path, value))

    assert choice.device_index == index


@pytest.mark.parametrize("value", ["7", "GeForce"])
def test_a_setting_naming_no_device_uses_none_and_lists_them(tmp_path: Path, value: str) -> None:
    choice = vulkan_device_choice(report(INTEGRATED, DISCRETE), settings(tmp_path, value))

    assert choice.device_index is None
    assert choice.reason == (
        f"LLAMASHIP_VULKAN_DEVICE={value!r} names no Vulkan device (the devices are "
        "0: AMD Radeon Graphics (RADV RENOIR); 1: AMD Radeon RX 6800 XT (RADV NAVI21)); "
        "not using Vulkan"
    )


def test_none_turns_vulkan_off(tmp_path: Path) -> None:
    choice = vulkan_device_choice(report(DISCRETE), settings(tmp_path, "None"))

    assert choice == VulkanChoice(None, "LLAMASHIP_VULKAN_DEVICE=none: not using Vulkan")


def test_without_devices_the_reason_is_the_detection_error(tmp_path: Path) -> None:
    hung = "Vulkan: the device query did not answer within 5 s and was killed; ..."

    choice = vulkan_device_choice(report(errors=(hung,)), settings(tmp_path, "0"))

    assert choice == VulkanChoice(None, f"no Vulkan device detected ({hung})")

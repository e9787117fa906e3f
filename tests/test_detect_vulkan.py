"""Vulkan detection through the system's real Vulkan loader: Mesa's lavapipe, a fake driver
(tests/hardware/fake_vulkan_icd.c) and its faults (a hang, a crash, a broken manifest, no
loader). Every fault ends in a CPU decision with one line saying why."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hardware.fakes import (
    VK_IRIS_XE,
    VK_RTX_3060,
    FakeHardware,
    FakeVulkanDevice,
    nvidia_driver_version,
    without_vulkan_loader,
)
from llamaship.detect.vulkan import detect_vulkan
from llamaship.detect.vulkan_files import find_loader
from llamaship.detect.vulkan_query import api_version_text, driver_version_text
from test_detect_smi import _gone

RADEON = FakeVulkanDevice("AMD Radeon RX 7600 (RADV NAVI33)", 0x1002, 2, 8192, 7000, 0x7480)


def vulkan_notes(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("  note: Vulkan:")]


def decision(stdout: str) -> str:
    [line] = [line for line in stdout.splitlines() if line.startswith("Decision: ")]
    return line


def test_lavapipe_is_reported_as_a_software_device(hardware: FakeHardware) -> None:
    """The system's own drivers (mesa-vulkan-drivers, installed by .ci/run): a real device."""
    hardware.system_vulkan = True

    report = hardware.detect()

    vulkan = report["vulkan"]
    assert vulkan["source"] == "loader", vulkan
    [lavapipe] = [device for device in vulkan["devices"] if device["name"].startswith("llvmpipe")]
    assert lavapipe["device_type"] == "cpu"
    assert (lavapipe["vendor_id"], lavapipe["vendor"]) == (0x10005, "Mesa")
    assert lavapipe["api_version"].startswith("1.")
    assert lavapipe["memory_mb"] > 0
    assert report["cached"] is False
    assert hardware.detect()["vulkan"] == vulkan
    shown = hardware.run_cli("detect", LLAMASHIP_VULKAN_DEVICE="llvmpipe").stdout.splitlines()
    assert any(
        line.startswith(f"Vulkan device choice: using Vulkan device {lavapipe['index']} (llvmpipe")
        for line in shown
    ), shown


def test_the_real_loader_lists_the_fake_drivers_devices(hardware: FakeHardware) -> None:
    """The loader orders devices itself (discrete first): the index is its order."""
    hardware.install_icd()
    hardware.vulkan_devices = [VK_IRIS_XE, VK_RTX_3060]

    devices = hardware.detect()["vulkan"]["devices"]

    assert devices == [
        {
            "index": 0,
            "name": "NVIDIA GeForce RTX 3060",
            "vendor_id": 0x10DE,
            "vendor": "NVIDIA",
            "device_id": 0x2504,
            "device_type": "discrete",
            "api_version": "1.3.242",
            "driver_version": "535.104.5.0",
            "memory_mb": 12288,  # the device-local heap only, not the host heap
            "memory_free_mb": 11264,  # VK_EXT_memory_budget: budget - usage
        },
        {
            "index": 1,
            "name": "Intel(R) Iris(R) Xe Graphics (TGL GT2)",
            "vendor_id": 0x8086,
            "vendor": "Intel",
            "device_id": 0x9A49,
            "device_type": "integrated",
            "api_version": "1.3.260",
            "driver_version": "23.2.1",
            "memory_mb": 3072,
            "memory_free_mb": None,  # no VK_EXT_memory_budget
        },
    ]


def test_versions_are_decoded_as_vulkaninfo_does() -> None:
    assert api_version_text(4206830) == "1.3.238"
    nvidia = nvidia_driver_version(535, 247, 1)
    assert driver_version_text(0x10DE, nvidia, "linux") == "535.247.1.0"
    assert driver_version_text(0x8086, 0x190F24, "win32") == "100.3876"
    assert driver_version_text(0x8086, 0x5C0004, "linux") == "1.448.4"
    assert driver_version_text(0x10005, 1, "linux") == "0.0.1"


def test_a_hung_driver_is_killed_with_its_children_and_the_launch_runs_on_cpu(
    hardware: FakeHardware,
) -> None:
    hardware.install_icd()
    hardware.vulkan_devices, hardware.vulkan_mode = [RADEON], "hang"

    result = hardware.run_cli("detect", GPU_DETECTION_TIMEOUT="1")

    assert result.returncode == 0, result.stderr
    assert vulkan_notes(result.stdout) == [
        "  note: Vulkan: the device query did not answer within 1 s and was killed; a Vulkan "
        "driver is hung (raise GPU_DETECTION_TIMEOUT if it is just slow)"
    ]
    assert decision(result.stdout).startswith("Decision: cpu (")
    pids = [int(pid) for pid in (hardware.root / "vulkan.pids").read_text().split()]
    assert len(pids) == 2
    for pid in pids:
        assert _gone(pid), f"process {pid} of the hung Vulkan driver is still running"
    assert not hardware.cache_file.exists()  # asked again at the next launch


def test_a_crashing_driver_ends_in_a_cpu_decision_and_is_asked_again(
    hardware: FakeHardware,
) -> None:
    hardware.install_icd()
    hardware.vulkan_devices, hardware.vulkan_mode = [RADEON], "crash"

    result = hardware.run_cli("detect")

    assert result.returncode == 0, result.stderr
    assert vulkan_notes(result.stdout) == [
        "  note: Vulkan: the device query crashed (SIGSEGV) inside a Vulkan driver; update or "
        "reinstall the GPU driver"
    ]
    assert decision(result.stdout).startswith("Decision: cpu (")
    assert not hardware.cache_file.exists()

    hardware.vulkan_mode = "normal"  # the driver was fixed: no stale answer stands in the way
    assert hardware.detect()["vulkan"]["devices"][0]["name"] == RADEON.name


def test_a_malformed_manifest_is_named_and_the_launch_runs_on_cpu(hardware: FakeHardware) -> None:
    manifest = hardware.write_manifest("broken_icd.json", '{"ICD": {"library_path": ')

    result = hardware.run_cli("detect")

    assert result.returncode == 0, result.stderr
    assert vulkan_notes(result.stdout) == [
        f"  note: Vulkan: the driver manifest {manifest} is not valid JSON (Expecting value: "
        "line 1 column 26 (char 25)): reinstall the driver that installed it, or remove the "
        "file (the Vulkan loader skips it, or fails)"
    ]
    assert decision(result.stdout).startswith("Decision: cpu (")
    assert hardware.cache_file.exists()  # until the manifest changes (it is fingerprinted)


def test_a_manifest_naming_a_missing_library_is_named(hardware: FakeHardware) -> None:
    hardware.install_icd()
    (hardware.lib_dir / "libfake_vulkan_icd.so").unlink()  # a half-removed driver

    report = hardware.detect()["vulkan"]

    assert report["source"] == "none"
    [error] = report["errors"]
    assert f"names the driver library {hardware.lib_dir}/libfake_vulkan_icd.so" in error
    assert "which is missing" in error


@pytest.mark.root
def test_without_a_loader_the_launch_runs_on_cpu(hardware: FakeHardware) -> None:
    """The loader is hidden in a private mount namespace, as on a machine without one."""
    loader = find_loader({})
    assert loader is not None, "the Vulkan loader (libvulkan1) is not installed here"
    command = [*without_vulkan_loader(hardware.root, loader), sys.executable]
    result = subprocess.run(
        [*command, "-m", "llamaship_backend", "detect"],
        env=hardware.env(),
        cwd=hardware.root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert vulkan_notes(result.stdout) == [
        "  note: Vulkan: no usable Vulkan loader (libvulkan.so.1: libvulkan.so.1: cannot open "
        "shared object file: No such file or directory); install your GPU driver's Vulkan "
        "support (Debian/Ubuntu: the libvulkan1 package)"
    ]
    assert decision(result.stdout).startswith("Decision: cpu (")
    assert hardware.cache_file.exists()  # "no loader" is conclusive: the fingerprint has it


def test_the_child_process_is_bounded_even_when_it_cannot_start(tmp_path: Path) -> None:
    report, conclusive = detect_vulkan(5, env={}, command=[str(tmp_path / "missing-program")])

    assert not conclusive
    assert report.source == "none"
    [error] = report.errors
    assert error.startswith("Vulkan: the device query could not be started: ")

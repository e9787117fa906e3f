"""Every Vulkan fault ends in a CPU launch with one line saying why: `llamaship serve` on a
machine whose Vulkan driver hangs, crashes, has a broken manifest, or has no loader at all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from hardware.fakes import (
    GTX_1060,
    FakeHardware,
    FakeVulkanDevice,
    llamaship_command,
    nvidia_driver_version,
    without_vulkan_loader,
)
from llamaship.detect.vulkan_files import find_loader
from llamaship_build.launch import launched
from overlay_kit.releases import Keys, ReleaseFactory, ReleaseSpec, VulkanSpec

pytestmark = pytest.mark.slow

RADEON = FakeVulkanDevice("AMD Radeon RX 7600 (RADV NAVI33)", 0x1002, 2, 8192, 7000, 0x7480)


def boot(machine: FakeHardware, command: list[str] | None = None, **env: str) -> dict[str, Any]:
    """Launch `llamaship serve`, return /api/capabilities (and stop it cleanly)."""
    full_env = machine.env(LLAMACPP_N_THREADS="1", LLAMASHIP_N_CTX="512", **env)
    with launched(command or llamaship_command(), full_env, inherit_env=False) as backend:
        capabilities: dict[str, Any] = httpx.get(
            f"{backend.url}/api/capabilities", timeout=30
        ).json()
        process = backend.process
    assert process.returncode == 0, backend.log.read_text()
    return capabilities


def assert_cpu_launch_saying(capabilities: dict[str, Any], *words: str) -> None:
    """The launch runs the CPU build, and the detection report has one line saying why."""
    assert capabilities["llama_cpp"]["variant"] == "cpu"
    assert capabilities["decision"]["variant"] == "cpu"
    vulkan = capabilities["detection"]["vulkan"]
    assert vulkan["devices"] == []
    [why] = vulkan["errors"]
    assert "\n" not in why
    for word in ("Vulkan: ", *words):
        assert word in why, why


def test_a_hung_vulkan_driver_ends_in_a_cpu_launch(hardware: FakeHardware) -> None:
    hardware.install_icd()
    hardware.vulkan_devices, hardware.vulkan_mode = [RADEON], "hang"

    capabilities = boot(hardware, GPU_DETECTION_TIMEOUT="1")

    assert_cpu_launch_saying(capabilities, "did not answer within 1 s and was killed", "hung")


def test_a_crashing_vulkan_driver_ends_in_a_cpu_launch(hardware: FakeHardware) -> None:
    hardware.install_icd()
    hardware.vulkan_devices, hardware.vulkan_mode = [RADEON], "crash"

    capabilities = boot(hardware)

    assert_cpu_launch_saying(capabilities, "crashed (SIGSEGV) inside a Vulkan driver")


def test_a_malformed_driver_manifest_ends_in_a_cpu_launch(hardware: FakeHardware) -> None:
    manifest = hardware.write_manifest("radeon_icd.x86_64.json", "{ICD: library_path}")

    capabilities = boot(hardware)

    assert_cpu_launch_saying(capabilities, f"the driver manifest {manifest} is not valid JSON")


@pytest.mark.root
def test_no_vulkan_loader_ends_in_a_cpu_launch(hardware: FakeHardware) -> None:
    loader = find_loader({})
    assert loader is not None, "the Vulkan loader (libvulkan1) is not installed here"
    command = [*without_vulkan_loader(hardware.root, loader), *llamaship_command()]

    capabilities = boot(hardware, command)

    assert_cpu_launch_saying(capabilities, "no usable Vulkan loader", "cannot open shared object")


def test_a_radeon_is_offered_the_vulkan_overlay_and_auto_upgrade_tries_it(
    hardware: FakeHardware, releases: ReleaseFactory, release_keys: Keys, tmp_path: Path
) -> None:
    """Without an NVIDIA GPU, a discrete Radeon is offered the release's Vulkan overlay (the
    same rule as the upgrade API); AUTO_UPGRADE_GPU installs it, and a module that cannot load
    (stand-in bytes here) is refused by its probe: the launch runs the CPU build, saying so."""
    hardware.install_icd()
    hardware.vulkan_devices = [RADEON]
    out = tmp_path / "release"
    index = releases.publish_releases(out, [releases.vulkan_release(out, VulkanSpec())], 1)
    command = llamaship_command(release_keys.public)

    offered = boot(hardware, command, LLAMASHIP_RELEASE_URL=str(index))
    assert offered["decision"]["upgrade_available"] is True, offered["decision"]
    assert (
        "Vulkan overlay" not in offered["decision"]["reason"]
        or "0.3.36-vk-1" in (offered["decision"]["reason"])
    )
    assert "AMD Radeon RX 7600" in offered["decision"]["reason"], offered["decision"]

    tried = boot(
        hardware,
        command,
        LLAMASHIP_RELEASE_URL=str(index),
        AUTO_UPGRADE_GPU="true",
    )
    assert tried["llama_cpp"]["variant"] == "cpu"
    [note] = [event for event in tried["events"] if event.startswith("AUTO_UPGRADE_GPU")]
    assert "the Vulkan overlay was not installed" in note and "probe failed" in note, note
    assert not (hardware.home / "overlays" / "vulkan.json").exists()


# The GTX 1060's Vulkan device, as NVIDIA's driver 580 lists it.
VK_GTX_1060 = FakeVulkanDevice(
    "NVIDIA GeForce GTX 1060 6GB",
    0x10DE,
    2,
    6144,
    5760,
    0x1C03,
    "1.4.312",
    nvidia_driver_version(580, 95, 5),
)


def test_a_pascal_card_is_offered_the_vulkan_overlay_never_the_cuda_one(
    hardware: FakeHardware, releases: ReleaseFactory, release_keys: Keys, tmp_path: Path
) -> None:
    """A GTX 1060 (compute capability 6.1) on a CUDA 13 driver, and a release offering a CUDA
    overlay (built for sm_75 and newer: CUDA 13 cannot compile for Pascal) and a Vulkan one:
    the launch offers the Vulkan overlay for the same GPU, saying why no CUDA overlay fits, and
    AUTO_UPGRADE_GPU tries the Vulkan overlay, never the CUDA one."""
    hardware.install_nvml()
    hardware.gpus = [GTX_1060]
    hardware.driver_version, hardware.cuda_version = "580.95.05", 13000
    hardware.install_icd()
    hardware.vulkan_devices = [VK_GTX_1060]
    out = tmp_path / "release"
    cuda, vulkan = releases.release(out, ReleaseSpec()), releases.vulkan_release(out, VulkanSpec())
    index = releases.publish_releases(out, [cuda, vulkan], 1)
    command = llamaship_command(release_keys.public)

    offered = boot(hardware, command, LLAMASHIP_RELEASE_URL=str(index))
    decision = offered["decision"]
    assert (decision["variant"], decision["upgrade_available"]) == ("cpu", True), decision
    reason = decision["reason"]
    assert "upgrade available" in reason and "overlay 0.3.36-vk-1 runs on" in reason, reason
    assert "NVIDIA GeForce GTX 1060 6GB / driver 580.95.5.0" in reason, reason
    assert "no CUDA overlay fits: " in reason and "compute capability 6.1" in reason, reason
    assert "can use the CUDA" not in reason and "\n" not in reason

    tried = boot(hardware, command, LLAMASHIP_RELEASE_URL=str(index), AUTO_UPGRADE_GPU="true")
    assert tried["llama_cpp"]["variant"] == "cpu"
    assert "compute capability 6.1" in tried["decision"]["reason"], tried["decision"]
    [note] = [event for event in tried["events"] if event.startswith("AUTO_UPGRADE_GPU")]
    assert "the Vulkan overlay was not installed" in note and "probe failed" in note, note
    overlays = hardware.home / "overlays"
    assert not (overlays / "active.json").exists() and not (overlays / "vulkan.json").exists()
    fetched = [path.name for path in overlays.rglob("*") if "cuda" in path.name]
    assert fetched == [], fetched  # no CUDA layer was ever downloaded

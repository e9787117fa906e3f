"""The Vulkan overlay: ranked after CUDA by the one rule, installed into its own pointer, probed
with the environment every llama.cpp process of the launch gets, and chosen at launch only for
a real (or explicitly named) device.

The module here is stand-in bytes and the probe a recorder: the real module on a real Vulkan
device (lavapipe) is proven in the bundle tests (tests/test_bundle_vulkan.py).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

import pytest

from llamaship.config import resolve_settings
from llamaship.detect.vulkan_choice import vulkan_device_choice
from llamaship.launch.decide_vulkan import decide_vulkan
from llamaship.launch.launch_env import BACKEND_PATH
from llamaship.overlay.best import install_best
from llamaship.overlay.install import Installer
from llamaship.overlay.select import NoMatchingOverlay, Target
from llamaship.overlay.store import OverlayStore
from llamaship.overlay.vulkan import VulkanInstaller, VulkanOverlay, installed_vulkan
from llamaship.paths import DataDirs
from llamaship_contract.detection import DetectionReport, VulkanDevice, VulkanReport
from llamaship_contract.launch import BackendDevice, ProbeResult
from llamaship_contract.overlay import VulkanRequirements
from llamaship_contract.trust import TrustedKeys
from overlay_kit.releases import (
    FAST_OPTIONS,
    GPU_REPORT,
    LLAMA_CPP_VERSION,
    Keys,
    ReleaseFactory,
    ReleaseSpec,
    VulkanSpec,
)


def _device(index: int, kind: str, name: str, api: str = "1.3.280") -> VulkanDevice:
    return VulkanDevice(
        index=index,
        name=name,
        vendor_id=0x1002,
        vendor="AMD",
        device_id=0x73BF,
        device_type=kind,  # type: ignore[arg-type]  # one of the contract's literals
        api_version=api,
        driver_version="2.0.302",
        memory_mb=16368,
    )


def _report(*devices: VulkanDevice) -> DetectionReport:
    return DetectionReport(
        source="none",
        vulkan=VulkanReport(source="loader", loader_version="1.3.280", devices=devices),
    )


RADEON = _device(0, "discrete", "AMD Radeon RX 6800")
LAVAPIPE = _device(0, "cpu", "llvmpipe (LLVM 15.0.6, 256 bits)", api="1.3.230")


def _target(report: DetectionReport, device: int | None) -> Target:
    return Target(
        platform="linux_x86_64",
        os_name="linux",
        python_tags=("py3",),
        llama_cpp_version=LLAMA_CPP_VERSION,
        machine=report,
        vulkan_device=device,
    )


def _install(
    data_dirs: DataDirs,
    key: str,
    index: Path,
    report: DetectionReport,
    target: Target | None = None,
) -> VulkanOverlay:
    """Install the index's Vulkan overlay for the device the settings choose (probe recorded)."""
    choice = vulkan_device_choice(report, resolve_settings(env={}))
    return VulkanInstaller(
        data_dirs, [key], choice=choice, module_probe=ProbeRecorder(), options=FAST_OPTIONS
    ).install_vulkan(str(index), target or _target(report, choice.device_index))


class ProbeRecorder:
    """The module probe's stand-in: records the module and environment it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[Path, dict[str, str]]] = []

    def __call__(self, module: Path, environment: Mapping[str, str], timeout: float) -> ProbeResult:
        self.calls.append((module, dict(environment)))
        return ProbeResult(
            llama_cpp_version=LLAMA_CPP_VERSION,
            llama_cpp_path="llama_cpp/__init__.py",
            backends=("CPU", "Vulkan"),
            devices=("CPU", "Vulkan0"),
            gpu_devices=(
                BackendDevice(
                    backend="Vulkan",
                    name="Vulkan0",
                    description=RADEON.name,
                    memory_total=RADEON.memory_mb * 2**20,
                    memory_free=RADEON.memory_mb * 2**20,
                ),
            ),
            cuda_error=None,
            libraries=(),
        )


@pytest.fixture
def mixed_release(releases: ReleaseFactory, tmp_path: Path) -> Path:
    """A release offering a CUDA overlay and a Vulkan overlay."""
    out = tmp_path / "release"
    cuda = releases.release(out, ReleaseSpec(serial=3))
    vulkan = releases.vulkan_release(out, VulkanSpec(serial=3))
    return releases.publish_releases(out, [cuda, vulkan], serial=3)


def test_a_radeon_gets_the_vulkan_overlay_with_the_environment_of_its_launches(
    mixed_release: Path, release_keys: Keys, data_dirs: DataDirs
) -> None:
    report = _report(RADEON)
    choice = vulkan_device_choice(report, resolve_settings(env={}))
    probe = ProbeRecorder()

    installer = VulkanInstaller(
        data_dirs, [release_keys.public], choice=choice, module_probe=probe, options=FAST_OPTIONS
    )
    overlay = installer.install_vulkan(str(mixed_release), _target(report, choice.device_index))
    assert overlay.module.read_bytes() == VulkanSpec().module
    assert overlay.module.name == "libggml-vulkan.so"
    ((module, environment),) = probe.calls
    assert module == overlay.module
    assert environment == {BACKEND_PATH: str(overlay.module), "GGML_VK_VISIBLE_DEVICES": "0"}
    store = OverlayStore(data_dirs)
    assert store.active() is None  # the CUDA pointer is untouched
    assert installed_vulkan(store) == overlay
    assert store.collect_garbage() == []  # the Vulkan layer is referenced by vulkan.json


def test_the_rule_ranks_cuda_first_for_an_nvidia_gpu(
    mixed_release: Path, release_keys: Keys, data_dirs: DataDirs
) -> None:
    report = GPU_REPORT.model_copy(update={"vulkan": _report(RADEON).vulkan})
    choice = vulkan_device_choice(report, resolve_settings(env={}))
    from overlay_kit.probe import layer_probe

    keys = [release_keys.public]
    best = install_best(
        str(mixed_release),
        _target(report, choice.device_index),
        cuda=Installer(data_dirs, keys, probe=layer_probe, options=FAST_OPTIONS),
        vulkan=VulkanInstaller(data_dirs, keys, choice=choice, options=FAST_OPTIONS),
    )
    assert best.kind == "cuda" and best.cuda is not None
    assert OverlayStore(data_dirs).vulkan() is None


def test_a_software_renderer_gets_no_overlay_unless_named(
    mixed_release: Path, release_keys: Keys, data_dirs: DataDirs
) -> None:
    report = _report(LAVAPIPE)
    choice = vulkan_device_choice(report, resolve_settings(env={}))
    assert choice.device_index is None
    with pytest.raises(NoMatchingOverlay) as raised:
        install_best(
            str(mixed_release),
            _target(report, choice.device_index),
            cuda=Installer(data_dirs, [release_keys.public], options=FAST_OPTIONS),
            vulkan=VulkanInstaller(
                data_dirs, [release_keys.public], choice=choice, options=FAST_OPTIONS
            ),
        )
    message = str(raised.value)
    assert "cuda: " in message and "no NVIDIA GPU was detected" in message
    assert "vulkan: " in message and "software renderers are used only when" in message
    named = vulkan_device_choice(report, resolve_settings(env={"LLAMASHIP_VULKAN_DEVICE": "0"}))
    assert named.device_index == 0


def test_the_launch_uses_vulkan_only_for_a_usable_chosen_device(
    mixed_release: Path, release_keys: Keys, data_dirs: DataDirs
) -> None:
    report = _report(RADEON)
    settings = resolve_settings(env={})
    choice = vulkan_device_choice(report, settings)

    _install(data_dirs, release_keys.public, mixed_release, report)
    pointer = OverlayStore(data_dirs).vulkan()
    assert pointer is not None
    assert decide_vulkan(report, pointer, choice, None).use
    old = _report(_device(0, "discrete", "AMD Radeon RX 6800", api="1.1.99"))
    verdict = decide_vulkan(old, pointer, vulkan_device_choice(old, settings), None)
    assert not verdict.use and "supports Vulkan 1.1.99; the overlay needs 1.2" in verdict.reason
    software = _report(LAVAPIPE)
    verdict = decide_vulkan(software, pointer, vulkan_device_choice(software, settings), None)
    assert not verdict.use and "software renderer" in verdict.reason
    quarantined = decide_vulkan(report, pointer, choice, "it crashed twice")
    assert not quarantined.use and "quarantined: it crashed twice" in quarantined.reason
    assert not decide_vulkan(report, pointer, choice, None, "slower than the CPU").use
    assert not decide_vulkan(report, None, choice, None).use


def test_overlay_status_shows_and_remove_deletes_the_vulkan_overlay(
    mixed_release: Path,
    release_keys: Keys,
    data_dirs: DataDirs,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from llamaship.cli import main
    from llamaship.cli.overlay import status_document

    _install(data_dirs, release_keys.public, mixed_release, _report(RADEON))
    store = OverlayStore(data_dirs)
    assert status_document(store)["vulkan"]["module"] == "backends/libggml-vulkan.so"
    monkeypatch.setenv("LLAMASHIP_HOME", str(data_dirs.home))
    assert main(["overlay", "status"]) == 0
    assert "vulkan: 0.3.36-vk-1 (Vulkan 1.2" in capsys.readouterr().out
    assert main(["overlay", "remove", "--kind", "vulkan"]) == 0
    assert "Vulkan overlay 0.3.36-vk-1 is removed" in capsys.readouterr().out
    assert store.vulkan() is None and installed_vulkan(store) is None
    assert not any(path.name.startswith("llama-vulkan") for path in store.layers_dir.iterdir())


def test_the_launch_finds_a_vulkan_offer_once_a_day_and_never_a_quarantined_one(
    mixed_release: Path, release_keys: Keys, data_dirs: DataDirs
) -> None:
    from llamaship.launch.decide import Decision
    from llamaship.launch.plan import Plan, available_vulkan

    report = _report(RADEON)
    settings = resolve_settings(
        env={"LLAMASHIP_HOME": str(data_dirs.home), "LLAMASHIP_RELEASE_URL": str(mixed_release)}
    )
    store = OverlayStore(data_dirs)
    keys = TrustedKeys(release=(release_keys.public,))

    def offer() -> VulkanRequirements | None:
        plan = Plan(report, Decision("cpu", "", False), None, [])
        return available_vulkan(settings, data_dirs, store, plan, keys, 0)

    offered = offer()
    assert offered is not None and offered.overlay_version == "0.3.36-vk-1"
    assert (data_dirs.state / "release-check-vulkan.json").is_file()
    mixed_release.unlink()  # the index is gone: the day's answer still stands
    assert offer() == offered
    store.quarantine("0.3.36-vk-1", "it crashed twice")
    assert offer() is None


def test_a_vulkan_overlay_made_for_another_llama_cpp_is_set_aside_at_launch(
    releases: ReleaseFactory,
    release_keys: Keys,
    data_dirs: DataDirs,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its module cannot load into this bundle's ggml (another compile): the launch says so in
    one event naming both versions and runs the CPU build, or offers the index's Vulkan
    overlay for this bundle's version."""
    from llamaship.launch.decide import Decision
    from llamaship.launch.plan import Plan
    from llamaship.launch.status import LaunchTracker
    from llamaship.launch.vulkan_launch import prepare_vulkan

    out = tmp_path / "release"
    older = VulkanSpec(overlay_version="0.3.35-vk-1", llama_cpp_version="0.3.35")
    made = [releases.vulkan_release(out, older), releases.vulkan_release(out, VulkanSpec())]
    index = releases.publish_releases(out, made, 1)
    report = _report(RADEON)
    older_bundle = dataclasses.replace(_target(report, 0), llama_cpp_version="0.3.35")
    _install(data_dirs, release_keys.public, index, report, older_bundle)
    monkeypatch.delenv(BACKEND_PATH, raising=False)

    def launch(**env: str) -> Plan:
        settings = resolve_settings(env={"LLAMASHIP_HOME": str(data_dirs.home), **env})
        plan = Plan(report, Decision("cpu", "no NVIDIA GPU detected", False), None, [])
        keys = TrustedKeys(release=(release_keys.public,))
        prepare_vulkan(plan, settings, OverlayStore(data_dirs), LaunchTracker(data_dirs), keys)
        return plan

    set_aside = (
        "Vulkan overlay 0.3.35-vk-1 was made for llama-cpp-python 0.3.35, this bundle runs "
        f"{LLAMA_CPP_VERSION}: it is not used until the overlay for this version is installed"
    )
    alone = launch()
    assert alone.events == [set_aside]
    assert alone.decision == Decision("cpu", f"{set_aside}; running on CPU", False)
    assert alone.vulkan is None and alone.measure is None and BACKEND_PATH not in os.environ
    offered = launch(LLAMASHIP_RELEASE_URL=str(index))
    assert offered.events == [set_aside] and offered.vulkan is None
    assert offered.decision.upgrade_available and offered.decision.variant == "cpu"
    assert offered.decision.reason.startswith(f"{set_aside}; upgrade available ")
    assert "overlay 0.3.36-vk-1 runs on AMD Radeon RX 6800" in offered.decision.reason

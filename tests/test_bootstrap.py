"""The launch bootstrap, end to end: `llamaship serve` on a fake GPU machine with a real
overlay installed, and every fault of detection, cache, decision and activation ending with
the app booting (on CPU, and saying why)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from fixtures_release import Release, install_overlay

from hardware.fakes import GTX_1060, FakeGpu, FakeHardware
from llamaship_build.launch import launched

pytestmark = pytest.mark.slow
SOURCE_COMMAND = (sys.executable, "-m", "llamaship")


def boot(machine: FakeHardware, release: Release, **env: str) -> dict[str, Any]:
    """Launch `llamaship serve`, return /api/capabilities (and stop it cleanly)."""
    full_env = machine.env(LLAMASHIP_TRUSTED_KEYS=release.public_key, LLAMACPP_N_THREADS="1",
                           LLAMASHIP_N_CTX="512", **env)
    with launched(SOURCE_COMMAND, full_env, inherit_env=False) as backend:
        capabilities: dict[str, Any] = httpx.get(f"{backend.url}/api/capabilities",
                                                 timeout=30).json()
        if "LLAMASHIP_MODEL" in env:
            reply = httpx.post(f"{backend.url}/v1/chat/completions", timeout=300, json={
                "messages": [{"role": "user", "content": "Name a color."}], "max_tokens": 6})
            assert reply.status_code == 200, reply.text
            capabilities["reply"] = reply.json()["choices"][0]["message"]["content"]
        process = backend.process
    assert process.returncode == 0, backend.log.read_text()
    return capabilities


def layers_dir(machine: FakeHardware) -> Path:
    return machine.home / "overlays" / "layers"


def assert_cpu(capabilities: dict[str, Any], *reason_words: str) -> None:
    assert capabilities["llama_cpp"]["variant"] == "cpu"
    assert capabilities["decision"]["variant"] == "cpu"
    assert "overlays" not in capabilities["llama_cpp"]["path"]
    for word in reason_words:
        assert word in capabilities["decision"]["reason"], capabilities["decision"]


def test_gpu_machine_boots_the_installed_overlay_and_generates(
        gpu_machine: FakeHardware, overlay_release: Release, gemma_model: Path) -> None:
    install_overlay(gpu_machine, overlay_release)
    capabilities = boot(gpu_machine, overlay_release, LLAMASHIP_MODEL=str(gemma_model))
    assert capabilities["decision"]["variant"] == "cuda", capabilities["decision"]
    assert capabilities["llama_cpp"]["variant"] == "cuda"
    assert capabilities["llama_cpp"]["version"] == "0.3.36"
    assert Path(capabilities["llama_cpp"]["path"]).is_relative_to(layers_dir(gpu_machine))
    assert capabilities["overlay"]["version"] == "0.3.36-cu13.0-1"
    assert capabilities["gpus"][0]["compute_capability"] == "7.5"
    assert capabilities["recommendation"]["n_gpu_layers"] == -1
    assert capabilities["reply"].strip()
    # no CUDA driver here: the CUDA backend is skipped and the overlay's CPU variants serve
    assert capabilities["llama_cpp"]["gpu_offload"] is False


@pytest.mark.parametrize(("gpu", "driver", "reason_word"), [
    (GTX_1060, "580.95.05", "compute capability"),
    (FakeGpu("NVIDIA T400", "GPU-t400", 512, 400, "7.5"), "580.95.05", "VRAM"),
    (FakeGpu("NVIDIA GeForce RTX 2080", "GPU-2080", 8192, 7900, "7.5"), "535.104.05",
     "older than 580.65.06"),
])
def test_hardware_the_overlay_does_not_fit_boots_on_cpu(
        gpu_machine: FakeHardware, overlay_release: Release, gpu: FakeGpu, driver: str,
        reason_word: str) -> None:
    install_overlay(gpu_machine, overlay_release)
    gpu_machine.gpus, gpu_machine.driver_version = [gpu], driver
    gpu_machine.install_nvml()  # a "new driver": the detection cache must not be reused
    assert_cpu(boot(gpu_machine, overlay_release), reason_word)


def test_launch_that_never_became_healthy_quarantines_the_overlay(
        gpu_machine: FakeHardware, overlay_release: Release) -> None:
    install_overlay(gpu_machine, overlay_release)
    sentinel = gpu_machine.home / "state" / "boot-sentinel.json"
    sentinel.write_text(json.dumps({"overlay_version": "0.3.36-cu13.0-1", "pid": 2**22 + 7}))
    first = boot(gpu_machine, overlay_release)
    assert_cpu(first, "quarantined", "never became healthy")
    assert any("quarantined" in event for event in first["events"])
    assert not sentinel.exists()
    assert_cpu(boot(gpu_machine, overlay_release), "quarantined")  # and it stays so


def test_overlay_whose_library_is_broken_fails_its_probe_and_boots_cpu(
        gpu_machine: FakeHardware, overlay_release: Release) -> None:
    install_overlay(gpu_machine, overlay_release)
    (libllama,) = layers_dir(gpu_machine).glob("llama-cuda-*/llama_cpp/lib/libllama.so")
    libllama.chmod(0o644)
    libllama.write_bytes(b"\x7fELF truncated")
    capabilities = boot(gpu_machine, overlay_release)
    assert_cpu(capabilities, "quarantined", "probe")
    quarantine = json.loads((gpu_machine.home / "overlays" / "quarantine.json").read_text())
    assert "0.3.36-cu13.0-1" in json.dumps(quarantine)


@pytest.mark.parametrize("state_file", ["overlays/active.json", ".gpu_detection_cache.json",
                                        "state/probe.json", "state/boot-sentinel.json"])
def test_corrupt_state_files_never_stop_the_boot(
        gpu_machine: FakeHardware, overlay_release: Release, state_file: str) -> None:
    install_overlay(gpu_machine, overlay_release)
    boot(gpu_machine, overlay_release)  # writes the cache and the probe record
    path = gpu_machine.home / state_file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'{"schema": 1, "truncat')
    capabilities = boot(gpu_machine, overlay_release)
    if state_file == "overlays/active.json":
        assert_cpu(capabilities)
    else:
        assert capabilities["llama_cpp"]["variant"] == "cuda", capabilities["decision"]


def test_nvml_failure_falls_back_to_nvidia_smi_and_still_uses_the_overlay(
        gpu_machine: FakeHardware, overlay_release: Release) -> None:
    install_overlay(gpu_machine, overlay_release)
    gpu_machine.nvml_fail, gpu_machine.smi_mode = "nvmlInitWithFlags:9", "normal"
    capabilities = boot(gpu_machine, overlay_release, GPU_DETECTION_CACHE="false")
    assert capabilities["detection"]["source"] == "nvidia-smi"
    assert capabilities["llama_cpp"]["variant"] == "cuda", capabilities["decision"]


def test_hung_nvidia_smi_without_nvml_boots_on_cpu(hardware: FakeHardware,
                                                   overlay_release: Release) -> None:
    hardware.gpus, hardware.smi_mode = [GTX_1060], "hang"
    capabilities = boot(hardware, overlay_release, GPU_DETECTION_TIMEOUT="1")
    assert_cpu(capabilities)
    assert any("nvidia-smi" in error for error in capabilities["detection"]["errors"])


def test_a_driver_change_probes_the_overlay_again(gpu_machine: FakeHardware,
                                                  overlay_release: Release) -> None:
    install_overlay(gpu_machine, overlay_release)
    boot(gpu_machine, overlay_release)
    record = gpu_machine.home / "state" / "probe.json"
    first = json.loads(record.read_text())
    boot(gpu_machine, overlay_release)
    assert json.loads(record.read_text()) == first  # same driver: no new probe
    gpu_machine.install_nvml()  # driver reinstalled
    capabilities = boot(gpu_machine, overlay_release)
    assert json.loads(record.read_text())["key"] != first["key"]
    assert capabilities["llama_cpp"]["variant"] == "cuda"


def test_without_consent_an_available_overlay_is_offered_not_installed(
        gpu_machine: FakeHardware, overlay_release: Release) -> None:
    capabilities = boot(gpu_machine, overlay_release, LLAMASHIP_RELEASE_URL=str(
        overlay_release.index))
    assert_cpu(capabilities, "upgrade available")
    assert capabilities["decision"]["upgrade_available"] is True
    assert not layers_dir(gpu_machine).exists() or not any(layers_dir(gpu_machine).iterdir())


def test_auto_upgrade_installs_at_launch_without_a_restart(
        gpu_machine: FakeHardware, overlay_release: Release) -> None:
    capabilities = boot(gpu_machine, overlay_release, AUTO_UPGRADE_GPU="true",
                        LLAMASHIP_RELEASE_URL=str(overlay_release.index))
    assert capabilities["llama_cpp"]["variant"] == "cuda", capabilities["decision"]
    assert any("AUTO_UPGRADE_GPU" in event for event in capabilities["events"])

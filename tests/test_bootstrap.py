"""The launch bootstrap, end to end: `llamaship serve` on a fake GPU machine with a real
overlay installed, and every fault of detection, cache, decision and activation ending with
the app booting (on CPU, and saying why)."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from fixtures_release import Release, install_overlay
from hardware.fake_cuda import compile_failing_libcuda, compile_stand_in_cublas
from hardware.fakes import GTX_1060, FakeGpu, FakeHardware, llamaship_command
from llamaship_build.launch import launched
from test_launch import launch as crashed_child

pytestmark = pytest.mark.slow


def boot(machine: FakeHardware, release: Release, **env: str) -> dict[str, Any]:
    """Launch `llamaship serve`, return /api/capabilities (and stop it cleanly)."""
    full_env = machine.env(LLAMACPP_N_THREADS="1", LLAMASHIP_N_CTX="512", **env)
    with launched(llamaship_command(release.public_key), full_env, inherit_env=False) as backend:
        capabilities: dict[str, Any] = httpx.get(
            f"{backend.url}/api/capabilities", timeout=30
        ).json()
        if "LLAMASHIP_MODEL" in env:
            reply = httpx.post(
                f"{backend.url}/v1/chat/completions",
                timeout=300,
                json={"messages": [{"role": "user", "content": "Name a color."}], "max_tokens": 6},
            )
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


def assert_no_cuda_device(machine: FakeHardware, capabilities: dict[str, Any]) -> None:
    """The launch chose the overlay, which passed its probe, and got as far as the CUDA device
    check: it runs the CPU build only because CUDA registers no device here (no driver), and
    quarantined nothing."""
    assert_cpu(capabilities, "CUDA reports no device")
    assert not any("quarantine" in event for event in capabilities["events"]), capabilities
    assert not (machine.home / "overlays" / "quarantine.json").exists()


def test_a_cuda_overlay_whose_backend_sees_no_gpu_runs_the_cpu_build_until_the_driver_changes(
    gpu_machine: FakeHardware,
    overlay_release: Release,
    gemma_model: Path,
    cuda_module: Path,
) -> None:
    """NVML reports an RTX 2080 but there is no usable libcuda.so.1 (issue 9 item 10): the
    probe sees no CUDA device, so the launch runs the CPU bundle and says why, in llama.cpp's
    or the loader's own words, without quarantining the overlay. A new driver (here: one whose
    cuInit fails) is probed again and explained again."""
    # The test overlay leaves out cuBLAS (444 MB): a stand-in lets libggml-cuda.so load.
    compile_stand_in_cublas(cuda_module, gpu_machine.lib_dir)
    install_overlay(gpu_machine, overlay_release)

    capabilities = boot(gpu_machine, overlay_release, LLAMASHIP_MODEL=str(gemma_model))
    assert_cpu(capabilities)
    assert capabilities["decision"]["reason"].startswith(
        "NVML sees NVIDIA GeForce RTX 2080 but CUDA reports no device: libcuda.so.1: cannot "
        "open shared object file"
    ), capabilities["decision"]
    assert capabilities["reply"].strip()
    assert not any("quarantine" in event for event in capabilities["events"])
    assert not (gpu_machine.home / "overlays" / "quarantine.json").exists()

    compile_failing_libcuda(gpu_machine.lib_dir)
    gpu_machine.install_nvml()  # a new driver: the probe record no longer vouches for it
    capabilities = boot(gpu_machine, overlay_release)
    assert_cpu(capabilities)
    assert capabilities["decision"]["reason"].startswith(
        "NVML sees NVIDIA GeForce RTX 2080 but CUDA reports no device: ggml_cuda_init: failed "
        "to initialize CUDA: "
    ), capabilities["decision"]


@pytest.mark.parametrize(
    ("gpu", "driver", "reason_word"),
    [
        (GTX_1060, "580.95.05", "compute capability"),
        (FakeGpu("NVIDIA T400", "GPU-t400", 512, 400, "7.5"), "580.95.05", "VRAM"),
        (
            FakeGpu("NVIDIA GeForce RTX 2080", "GPU-2080", 8192, 7900, "7.5"),
            "535.104.05",
            "older than 580.65.06",
        ),
    ],
)
def test_hardware_the_overlay_does_not_fit_boots_on_cpu(
    gpu_machine: FakeHardware, overlay_release: Release, gpu: FakeGpu, driver: str, reason_word: str
) -> None:
    install_overlay(gpu_machine, overlay_release)
    gpu_machine.gpus, gpu_machine.driver_version = [gpu], driver
    gpu_machine.install_nvml()  # a "new driver": the detection cache must not be reused
    assert_cpu(boot(gpu_machine, overlay_release), reason_word)


OVERLAY_VERSION = "0.3.36-cu13.0-1"


def boot_count(machine: FakeHardware) -> dict[str, Any]:
    path = machine.home / "state" / "boot-count" / f"{OVERLAY_VERSION}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def status(machine: FakeHardware, release: Release) -> dict[str, Any]:
    """`llamaship status --json`."""
    result = subprocess.run(
        [*llamaship_command(release.public_key), "status", "--json"],
        env=machine.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    reply: dict[str, Any] = json.loads(result.stdout)
    return reply


# Without a CUDA driver here the launch itself runs the CPU build (CUDA registers no device),
# so the launches that crash with the overlay are real processes that record themselves the
# way `serve` does and then die (`test_launch.launch`); the launch after them is a real `serve`.
def test_two_crashed_launches_in_a_row_quarantine_the_overlay_one_does_not(
    gpu_machine: FakeHardware, overlay_release: Release
) -> None:
    install_overlay(gpu_machine, overlay_release)
    assert crashed_child(gpu_machine.home, "crash-loading").returncode == -signal.SIGABRT
    first = boot(gpu_machine, overlay_release)
    assert any(
        "died while loading its first model model.gguf: 1 of 2 tries left" in event
        for event in first["events"]
    ), first["events"]
    assert "quarantined" not in first["decision"]["reason"]
    assert boot_count(gpu_machine)["tries_left"] == 1
    assert status(gpu_machine, overlay_release)["launch"]["process"]["phase"] == "ended-by-signal"

    boot(gpu_machine, overlay_release)  # stopped by SIGTERM: neither counted nor healthy
    assert boot_count(gpu_machine)["tries_left"] == 1
    assert crashed_child(gpu_machine.home, "crash-booting").returncode == -signal.SIGABRT
    capabilities = boot(gpu_machine, overlay_release)
    assert_cpu(capabilities, "quarantined", "2 launches in a row")
    assert any("died while starting" in event for event in capabilities["events"])
    assert not boot_count(gpu_machine)
    assert_cpu(boot(gpu_machine, overlay_release), "quarantined")  # and it stays so


def test_the_launch_explains_itself_in_the_log_and_does_not_probe_after_an_install(
    gpu_machine: FakeHardware, overlay_release: Release
) -> None:
    install_overlay(gpu_machine, overlay_release)
    record = gpu_machine.home / "state" / "probe.json"
    assert json.loads(record.read_text())["by"] == "install"
    installed_record = record.read_text()
    boot(gpu_machine, overlay_release)
    assert record.read_text() == installed_record  # the launch did not probe again
    log = (gpu_machine.home / "logs" / "llamaship.log").read_text()
    assert "not probing" in log and "probing overlay" not in log
    assert "decision: cpu: NVML sees NVIDIA GeForce RTX 2080 but CUDA reports no device" in log
    assert "launch phase: serving" in log and "launch phase: ended-by-signal" in log


def test_overlay_whose_library_is_broken_fails_its_probe_and_boots_cpu(
    gpu_machine: FakeHardware, overlay_release: Release
) -> None:
    install_overlay(gpu_machine, overlay_release)
    (module,) = layers_dir(gpu_machine).glob("llama-cuda-*/backends/libggml-cuda.so")
    module.chmod(0o644)
    module.write_bytes(b"\x7fELF truncated")
    (gpu_machine.home / "state" / "probe.json").unlink()  # damaged before the installer's probe
    capabilities = boot(gpu_machine, overlay_release)
    assert_cpu(capabilities, "quarantined", "probe")
    quarantine = json.loads((gpu_machine.home / "overlays" / "quarantine.json").read_text())
    assert "0.3.36-cu13.0-1" in json.dumps(quarantine)


@pytest.mark.parametrize(
    "state_file",
    [
        "overlays/active.json",
        ".gpu_detection_cache.json",
        "state/probe.json",
        f"state/boot-count/{OVERLAY_VERSION}.json",
        "state/last-launch.json",
    ],
)
def test_corrupt_state_files_never_stop_the_boot(
    gpu_machine: FakeHardware, overlay_release: Release, state_file: str
) -> None:
    install_overlay(gpu_machine, overlay_release)
    first = boot(gpu_machine, overlay_release)  # writes the cache and the probe record
    assert_no_cuda_device(gpu_machine, first)
    path = gpu_machine.home / state_file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'{"schema": 1, "truncat')
    capabilities = boot(gpu_machine, overlay_release)
    if state_file == "overlays/active.json":
        assert_cpu(capabilities)
        return
    # the same decision as the boot before: the overlay chosen, probed and device-checked
    assert_no_cuda_device(gpu_machine, capabilities)
    reason, first_reason = capabilities["decision"]["reason"], first["decision"]["reason"]
    assert reason.split(": ")[0] == first_reason.split(": ")[0], (reason, first_reason)
    if state_file == "state/probe.json":  # unreadable: the launch probed the overlay again
        assert json.loads(path.read_text())["by"] == "launch"


def test_nvml_failure_falls_back_to_nvidia_smi_and_still_chooses_the_overlay(
    gpu_machine: FakeHardware, overlay_release: Release
) -> None:
    install_overlay(gpu_machine, overlay_release)
    gpu_machine.nvml_fail, gpu_machine.smi_mode = "nvmlInitWithFlags:9", "normal"
    capabilities = boot(gpu_machine, overlay_release, GPU_DETECTION_CACHE="false")
    assert capabilities["detection"]["source"] == "nvidia-smi"
    assert_no_cuda_device(gpu_machine, capabilities)


def test_hung_nvidia_smi_without_nvml_boots_on_cpu(
    hardware: FakeHardware, overlay_release: Release
) -> None:
    hardware.gpus, hardware.smi_mode = [GTX_1060], "hang"
    capabilities = boot(hardware, overlay_release, GPU_DETECTION_TIMEOUT="1")
    assert_cpu(capabilities)
    assert any("nvidia-smi" in error for error in capabilities["detection"]["errors"])


def test_a_driver_change_probes_the_overlay_again(
    gpu_machine: FakeHardware, overlay_release: Release
) -> None:
    install_overlay(gpu_machine, overlay_release)
    boot(gpu_machine, overlay_release)
    record = gpu_machine.home / "state" / "probe.json"
    first = json.loads(record.read_text())
    boot(gpu_machine, overlay_release)
    assert json.loads(record.read_text()) == first  # same driver: no new probe
    gpu_machine.install_nvml()  # driver reinstalled
    capabilities = boot(gpu_machine, overlay_release)
    second = json.loads(record.read_text())
    assert second["key"] != first["key"] and second["by"] == "launch"
    # the bundle's llama.cpp loaded the layer's module: it found libcudart in the runtime layer
    # and stopped at the cuBLAS the test layer leaves out
    imported = Path(second["result"]["llama_cpp_path"]).resolve()
    assert not imported.is_relative_to(layers_dir(gpu_machine).resolve()), imported
    assert "libcublas.so.13" in second["result"]["cuda_error"]
    assert_no_cuda_device(gpu_machine, capabilities)


def test_without_consent_an_available_overlay_is_offered_not_installed(
    gpu_machine: FakeHardware, overlay_release: Release
) -> None:
    capabilities = boot(
        gpu_machine, overlay_release, LLAMASHIP_RELEASE_URL=str(overlay_release.index)
    )
    assert_cpu(capabilities, "upgrade available")
    assert capabilities["decision"]["upgrade_available"] is True
    assert not layers_dir(gpu_machine).exists() or not any(layers_dir(gpu_machine).iterdir())


def test_auto_upgrade_installs_at_launch_without_a_restart(
    gpu_machine: FakeHardware, overlay_release: Release
) -> None:
    capabilities = boot(
        gpu_machine,
        overlay_release,
        AUTO_UPGRADE_GPU="true",
        LLAMASHIP_RELEASE_URL=str(overlay_release.index),
    )
    # installed and adopted by this launch (which then runs the CPU build here: no CUDA driver)
    assert capabilities["decision"]["upgrade_available"] is False, capabilities["decision"]
    assert "CUDA reports no device" in capabilities["decision"]["reason"]
    assert any(
        "AUTO_UPGRADE_GPU: installed overlay" in event for event in capabilities["events"]
    ), capabilities["events"]
    log = (gpu_machine.home / "logs" / "llamaship.log").read_text()
    assert "AUTO_UPGRADE_GPU: downloaded 0 %" in log
    assert "AUTO_UPGRADE_GPU: downloaded 100 %" in log


def test_two_launches_at_once_with_auto_upgrade_both_boot(
    gpu_machine: FakeHardware, overlay_release: Release
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    env = {"AUTO_UPGRADE_GPU": "true", "LLAMASHIP_RELEASE_URL": str(overlay_release.index)}
    with ThreadPoolExecutor(2) as pool:
        launches = [pool.submit(boot, gpu_machine, overlay_release, **env) for _ in range(2)]
        events = [event for launch in launches for event in launch.result()["events"]]
    # one installed it; the other found it installed, or another install running (no wait)
    assert any(event.startswith("AUTO_UPGRADE_GPU: installed overlay") for event in events), events
    active = json.loads((gpu_machine.home / "overlays" / "active.json").read_text())
    assert OVERLAY_VERSION in json.dumps(active)
    assert not list((gpu_machine.home / "overlays").glob(".staging-*"))

"""`llamaship detect`: output for people and programs, exit codes."""

from __future__ import annotations

import json

from hardware.fakes import GTX_1060, RTX_3060, VK_IRIS_XE, VK_RTX_3060, FakeHardware


def test_summary_lists_every_gpu(hardware: FakeHardware) -> None:
    hardware.install_nvml()
    hardware.gpus = [RTX_3060, GTX_1060]
    hardware.install_icd()
    hardware.vulkan_devices = [VK_IRIS_XE, VK_RTX_3060]

    result = hardware.run_cli("detect")

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "NVIDIA driver 535.104.05, CUDA 12.2 (from nvml)",
        "  GPU 0: NVIDIA GeForce RTX 3060, 12288 MB VRAM (11800 MB free), compute capability 8.6",
        (
            "  GPU 1: NVIDIA GeForce GTX 1060 6GB, 6144 MB VRAM (5760 MB free), "
            "compute capability 6.1"
        ),
        "Vulkan: 2 device(s) (from loader 1.3.239)",
        (
            "  Vulkan 0: NVIDIA GeForce RTX 3060, discrete, NVIDIA, 12288 MB (11264 MB free), "
            "Vulkan 1.3.242, driver 535.104.5.0"
        ),
        (
            "  Vulkan 1: Intel(R) Iris(R) Xe Graphics (TGL GT2), integrated, Intel, 3072 MB, "
            "Vulkan 1.3.260, driver 23.2.1"
        ),
        (
            "Vulkan device choice: using Vulkan device 0 (NVIDIA GeForce RTX 3060, discrete GPU, "
            "12288 MB), preferred over Vulkan device 1 (Intel(R) Iris(R) Xe Graphics (TGL GT2), "
            "integrated GPU, 3072 MB)"
        ),
        (
            "Decision: cpu (no CUDA overlay is installed and no release index was checked: "
            "this build names none (set LLAMASHIP_RELEASE_URL to the releases.json of the GPU "
            "overlays); running on CPU)"
        ),
    ]
    assert "(from nvml, cached)" in hardware.run_cli("detect").stdout


def test_summary_without_gpu_says_why_and_exits_zero(hardware: FakeHardware) -> None:
    hardware.smi_mode = "fail"

    result = hardware.run_cli("detect")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "No NVIDIA GPU detected (from none)."
    assert lines[2].startswith("  note: nvidia-smi exited with status 9")
    assert lines[3:5] == [
        "No Vulkan device detected.",
        "  note: Vulkan: the loader found no Vulkan driver (VK_ERROR_INCOMPATIBLE_DRIVER); "
        "install your GPU's Vulkan driver (Debian/Ubuntu: mesa-vulkan-drivers for AMD and "
        "Intel, the NVIDIA driver for NVIDIA)",
    ]


def test_the_vulkan_device_setting_is_shown_as_it_resolves(hardware: FakeHardware) -> None:
    hardware.install_icd()
    hardware.vulkan_devices = [VK_IRIS_XE, VK_RTX_3060]

    result = hardware.run_cli("detect", LLAMASHIP_VULKAN_DEVICE="iris")

    assert result.returncode == 0, result.stderr
    assert (
        "Vulkan device choice: using Vulkan device 1 (Intel(R) Iris(R) Xe Graphics (TGL GT2), "
        "integrated GPU, 3072 MB), as LLAMASHIP_VULKAN_DEVICE='iris' asks"
    ) in result.stdout.splitlines()


def test_json_output_is_only_the_report(hardware: FakeHardware) -> None:
    hardware.install_nvml()
    hardware.gpus = [GTX_1060]

    result = hardware.run_cli("detect", "--json")

    report = json.loads(result.stdout)
    assert sorted(report) == [
        "cached",
        "cuda_driver_version",
        "driver_version",
        "errors",
        "gpus",
        "schema",
        "source",
        "vulkan",
    ]
    assert sorted(report["vulkan"]) == ["devices", "errors", "loader_version", "source"]


def test_invalid_configuration_exits_with_the_config_error_code(hardware: FakeHardware) -> None:
    result = hardware.run_cli("detect", GPU_DETECTION_TIMEOUT="soon")

    assert result.returncode == 2
    assert "GPU_DETECTION_TIMEOUT='soon' is invalid" in result.stderr


def test_env_file_settings_apply(hardware: FakeHardware) -> None:
    hardware.install_nvml()
    env_file = hardware.root / "custom.env"
    env_file.write_text("GPU_DETECTION_CACHE=false\n")

    result = hardware.run_cli("--env-file", str(env_file), "detect", "--json")

    assert result.returncode == 0, result.stderr
    assert not hardware.cache_file.exists()

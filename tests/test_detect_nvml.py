"""Detection through the real nvidia-ml-py code against the fake libnvidia-ml.so.1."""

from __future__ import annotations

import pytest

from hardware.fakes import GTX_1060, RTX_3060, FakeGpu, FakeHardware
from llamaship.detect.nvml import format_cuda_version


def test_no_driver_at_all_reports_no_gpu(hardware: FakeHardware) -> None:
    report = hardware.detect()

    assert report["source"] == "none"
    assert report["gpus"] == []
    assert report["driver_version"] is None
    assert report["cuda_driver_version"] is None
    assert any("libnvidia-ml.so.1" in error for error in report["errors"])
    assert any("nvidia-smi: not found" in error for error in report["errors"])


def test_driver_without_gpus_reports_zero_gpus(hardware: FakeHardware) -> None:
    hardware.install_nvml()

    report = hardware.detect()

    assert report.pop("vulkan")["devices"] == []  # tests/test_detect_vulkan.py covers Vulkan
    assert report == {
        "schema": 1,
        "source": "nvml",
        "cached": False,
        "driver_version": "535.104.05",
        "cuda_driver_version": "12.2",
        "gpus": [],
        "errors": [],
    }


def test_one_gpu_is_described_completely(hardware: FakeHardware) -> None:
    hardware.install_nvml()
    hardware.gpus = [GTX_1060]
    hardware.driver_version = "470.82.01"
    hardware.cuda_version = 11040

    report = hardware.detect()

    assert report["source"] == "nvml"
    assert report["driver_version"] == "470.82.01"
    assert report["cuda_driver_version"] == "11.4"
    assert report["gpus"] == [
        {
            "index": 0,
            "name": "NVIDIA GeForce GTX 1060 6GB",
            "uuid": "GPU-1060aaaa-0000-0000-0000-000000000000",
            "vram_total_mb": 6144,
            "vram_free_mb": 5760,
            "compute_capability": "6.1",
        }
    ]


def test_two_gpus_keep_their_order_and_nvml_is_shut_down(hardware: FakeHardware) -> None:
    hardware.install_nvml()
    hardware.gpus = [RTX_3060, GTX_1060]

    report = hardware.detect()

    assert [(gpu["index"], gpu["name"]) for gpu in report["gpus"]] == [
        (0, RTX_3060.name),
        (1, GTX_1060.name),
    ]
    assert [gpu["compute_capability"] for gpu in report["gpus"]] == ["8.6", "6.1"]
    calls = hardware.nvml_calls()
    assert calls[0] == "nvmlInitWithFlags"
    assert calls[-1] == "nvmlShutdown"


def test_a_failing_nvml_call_still_shuts_nvml_down(hardware: FakeHardware) -> None:
    hardware.install_nvml()
    hardware.gpus = [RTX_3060]
    hardware.nvml_fail = "nvmlDeviceGetUUID:15"

    report = hardware.detect()

    assert report["source"] == "none"
    assert any("GPU is lost" in error for error in report["errors"])
    assert hardware.nvml_calls()[-1] == "nvmlShutdown"


@pytest.mark.parametrize("gpus", [[GTX_1060], [RTX_3060, GTX_1060]], ids=["1gpu", "2gpus"])
def test_nvml_init_failure_falls_back_to_nvidia_smi(
    hardware: FakeHardware, gpus: list[FakeGpu]
) -> None:
    hardware.install_nvml()
    hardware.gpus = gpus
    from_nvml = hardware.detect("--refresh")
    hardware.nvml_fail = "nvmlInitWithFlags:9"
    hardware.smi_mode = "normal"

    from_smi = hardware.detect("--refresh")

    assert from_smi["source"] == "nvidia-smi"
    assert from_smi["errors"] == ["NVML: initialisation failed: Driver Not Loaded"]
    assert from_smi["gpus"] == from_nvml["gpus"]
    assert from_smi["driver_version"] == from_nvml["driver_version"]
    assert from_smi["cuda_driver_version"] == from_nvml["cuda_driver_version"]


def test_nvml_init_failure_without_nvidia_smi_reports_no_gpu(hardware: FakeHardware) -> None:
    hardware.install_nvml()
    hardware.gpus = [RTX_3060]
    hardware.nvml_fail = "nvmlInitWithFlags:9"

    report = hardware.detect()

    assert report["source"] == "none"
    assert report["errors"] == [
        "NVML: initialisation failed: Driver Not Loaded",
        "nvidia-smi: not found on PATH",
    ]


@pytest.mark.parametrize(
    ("encoded", "text"), [(12020, "12.2"), (13000, "13.0"), (12080, "12.8"), (11040, "11.4")]
)
def test_cuda_driver_version_is_decoded(encoded: int, text: str) -> None:
    assert format_cuda_version(encoded) == text

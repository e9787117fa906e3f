"""The nvidia-smi fallback against the fake nvidia-smi: answers, garbage, failures, hangs."""

from __future__ import annotations

from pathlib import Path

import pytest

from hardware.fakes import GTX_1060, RTX_3060, FakeHardware
from llamaship.detect.errors import SourceFailed
from llamaship.detect.smi import parse_query_output


def _smi_only(hardware: FakeHardware, mode: str) -> None:
    hardware.gpus = [RTX_3060, GTX_1060]
    hardware.smi_mode = mode


def test_nvidia_smi_answers_when_nvml_is_missing(hardware: FakeHardware) -> None:
    _smi_only(hardware, "normal")
    hardware.driver_version = "580.65.06"
    hardware.cuda_version = 13000

    report = hardware.detect()

    assert report["source"] == "nvidia-smi"
    assert report["driver_version"] == "580.65.06"
    assert report["cuda_driver_version"] == "13.0"
    assert report["gpus"][1] == {
        "index": 1,
        "name": "NVIDIA GeForce GTX 1060 6GB",
        "uuid": "GPU-1060aaaa-0000-0000-0000-000000000000",
        "vram_total_mb": 6144,
        "vram_free_mb": 5760,
        "compute_capability": "6.1",
    }
    assert len(report["errors"]) == 1 and "libnvidia-ml.so.1" in report["errors"][0]
    query, banner = hardware.smi_calls()
    assert query == (
        "--query-gpu=index,name,uuid,memory.total,memory.free,compute_cap,"
        "driver_version --format=csv,noheader,nounits"
    )
    assert banner == ""


def test_garbage_output_is_an_error_not_a_crash(hardware: FakeHardware) -> None:
    _smi_only(hardware, "garbage")

    report = hardware.detect()

    assert report["source"] == "none"
    assert any("not the expected CSV" in error for error in report["errors"])
    assert not hardware.cache_file.exists()  # a failure is retried at the next launch


def test_non_zero_exit_is_reported_with_its_message(hardware: FakeHardware) -> None:
    _smi_only(hardware, "fail")

    report = hardware.detect()

    assert report["source"] == "none"
    [smi_error] = [error for error in report["errors"] if error.startswith("nvidia-smi")]
    assert "exited with status 9" in smi_error
    assert "couldn't communicate with the NVIDIA driver" in smi_error
    assert not hardware.cache_file.exists()


def test_driver_without_devices_reports_no_gpu(hardware: FakeHardware) -> None:
    hardware.smi_mode = "normal"

    report = hardware.detect()

    assert report["source"] == "none"
    assert any("status 6: No devices were found" in error for error in report["errors"])


def _gone(pid: int) -> bool:
    """True once `pid` no longer runs (exited, or a zombie nobody has reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in {"Z", "X"}


def test_hung_nvidia_smi_and_its_children_are_killed(hardware: FakeHardware) -> None:
    _smi_only(hardware, "hang")

    result = hardware.run_cli("detect", "--json", GPU_DETECTION_TIMEOUT="2")

    assert result.returncode == 0, result.stderr
    assert '"source": "none"' in result.stdout
    assert "nvidia-smi did not answer within 2 s and was killed" in result.stdout
    pids = [int(pid) for pid in (hardware.root / "smi.pids").read_text().split()]
    assert len(pids) == 2
    for pid in pids:
        assert _gone(pid), f"process {pid} of the hung nvidia-smi is still running"
    assert not hardware.cache_file.exists()


def test_csv_with_spaces_in_names_is_parsed() -> None:
    gpus, driver = parse_query_output(
        "0, NVIDIA RTX A6000, GPU-a, 49140, 48000, 8.6, 550.54.14\n"
        "1, Tesla T4, GPU-b, 15360, 15000, 7.5, 550.54.14\n\n"
    )

    assert driver == "550.54.14"
    assert [(gpu.name, gpu.vram_total_mb, gpu.compute_capability) for gpu in gpus] == [
        ("NVIDIA RTX A6000", 49140, "8.6"),
        ("Tesla T4", 15360, "7.5"),
    ]


def test_empty_output_means_no_gpu() -> None:
    assert parse_query_output("\n") == ([], None)


@pytest.mark.parametrize(
    "line",
    [
        "0, Tesla T4, GPU-b, 15360, 15000, 7.5",  # a column missing
        "0, Tesla T4, GPU-b, [N/A], 15000, 7.5, 550.54.14",  # memory not a number
        "0, Tesla T4, GPU-b, 15360, 15000, [Not Supported], 550.54.14",  # no compute capability
        "Failed to initialize NVML: Driver/library version mismatch",
    ],
)
def test_unexpected_lines_are_refused(line: str) -> None:
    with pytest.raises(SourceFailed, match="not the expected CSV"):
        parse_query_output(line)

"""The detection cache: served when valid, ignored and rewritten when not, never fatal."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hardware.fakes import GTX_1060, RTX_3060, VK_RTX_3060, FakeGpu, FakeHardware
from llamaship.detect.cache import read_cache, write_cache
from llamaship.detect.fingerprint import compute_fingerprint
from llamaship_contract.detection import none_report

RENAMED = FakeGpu("Renamed GPU", RTX_3060.uuid, RTX_3060.total_mb, RTX_3060.free_mb, "8.6")


def _gpu_names(report: dict[str, Any]) -> list[str]:
    return [gpu["name"] for gpu in report["gpus"]]


@pytest.fixture
def cached_machine(hardware: FakeHardware) -> FakeHardware:
    """A machine with an RTX 3060 whose detection is already cached."""
    hardware.install_nvml()
    hardware.gpus = [RTX_3060]
    first = hardware.detect()
    assert first["cached"] is False
    assert hardware.cache_file.exists()
    return hardware


def test_cache_hit_is_marked_and_skips_detection(cached_machine: FakeHardware) -> None:
    calls_before = cached_machine.nvml_calls()
    cached_machine.gpus = [RENAMED]  # what NVML would say now, if it were asked

    report = cached_machine.detect()

    assert report["cached"] is True
    assert _gpu_names(report) == [RTX_3060.name]
    assert cached_machine.nvml_calls() == calls_before


def test_replaced_driver_library_is_detected_again(cached_machine: FakeHardware) -> None:
    cached_machine.gpus = [RENAMED]
    status = cached_machine.nvml_library.stat()
    os.utime(cached_machine.nvml_library, ns=(status.st_atime_ns, status.st_mtime_ns + 10**9))

    report = cached_machine.detect()

    assert report["cached"] is False
    assert _gpu_names(report) == ["Renamed GPU"]
    assert cached_machine.detect()["cached"] is True


def test_no_gpu_answer_does_not_outlive_a_driver_install(hardware: FakeHardware) -> None:
    hardware.gpus = [GTX_1060]
    assert hardware.detect()["source"] == "none"
    assert hardware.detect()["cached"] is True  # "no driver" is a conclusive answer

    hardware.install_nvml()  # the driver's library appears on LD_LIBRARY_PATH
    report = hardware.detect()

    assert report["source"] == "nvml"
    assert report["cached"] is False
    assert _gpu_names(report) == [GTX_1060.name]


def test_no_gpu_answer_does_not_outlive_nvidia_smi_appearing(hardware: FakeHardware) -> None:
    hardware.gpus = [GTX_1060]
    assert hardware.detect()["source"] == "none"

    hardware.smi_mode = "normal"
    report = hardware.detect()

    assert report["source"] == "nvidia-smi"
    assert _gpu_names(report) == [GTX_1060.name]


def test_no_vulkan_answer_does_not_outlive_a_vulkan_driver_install(hardware: FakeHardware) -> None:
    hardware.vulkan_devices = [VK_RTX_3060]
    assert hardware.detect()["vulkan"]["devices"] == []
    assert hardware.detect()["cached"] is True  # "no Vulkan driver" is a conclusive answer

    hardware.install_icd()  # a driver manifest appears in the loader's directory
    report = hardware.detect()

    assert report["cached"] is False
    assert [device["name"] for device in report["vulkan"]["devices"]] == [VK_RTX_3060.name]


def test_a_replaced_vulkan_driver_library_is_detected_again(hardware: FakeHardware) -> None:
    """The manifest stays the same; the driver library it names is updated."""
    hardware.install_icd()
    hardware.vulkan_devices = [VK_RTX_3060]
    assert hardware.detect()["cached"] is False
    assert hardware.detect()["cached"] is True
    calls = len(hardware.vulkan_calls())

    library = hardware.lib_dir / "libfake_vulkan_icd.so"
    status = library.stat()
    os.utime(library, ns=(status.st_atime_ns, status.st_mtime_ns + 10**9))

    assert hardware.detect()["cached"] is False
    assert len(hardware.vulkan_calls()) > calls


def _stale(text: str) -> str:
    data = json.loads(text)
    data["fingerprint"]["versions"]["bundle"] = "0.0.1"
    data["report"]["gpus"][0]["name"] = "Stale GPU"
    return json.dumps(data)


def _bad_report(text: str) -> str:
    data = json.loads(text)
    data["report"]["gpus"][0]["vram_total_mb"] = "plenty"
    return json.dumps(data)


def _other_schema(text: str) -> str:
    data = json.loads(text)
    data["schema"] = 2
    data["report"]["gpus"][0]["name"] = "Future GPU"
    return json.dumps(data)


CORRUPTIONS: dict[str, Callable[[str], str]] = {
    "not-json": lambda text: "{this is not json",
    "truncated": lambda text: text[: len(text) // 2],
    "empty": lambda text: "",
    "not-an-object": lambda text: "[1, 2, 3]",
    "other-schema": _other_schema,
    "stale-fingerprint": _stale,
    "bad-report": _bad_report,
}


@pytest.mark.parametrize("corrupt", list(CORRUPTIONS.values()), ids=list(CORRUPTIONS))
def test_bad_cache_is_ignored_and_rewritten(
    cached_machine: FakeHardware, corrupt: Callable[[str], str]
) -> None:
    valid = cached_machine.cache_file.read_text()
    cached_machine.cache_file.write_text(corrupt(valid))

    report = cached_machine.detect()

    assert report["cached"] is False
    assert _gpu_names(report) == [RTX_3060.name]
    assert json.loads(cached_machine.cache_file.read_text()) == json.loads(valid)
    assert cached_machine.detect()["cached"] is True


def test_disabled_cache_is_neither_read_nor_written(cached_machine: FakeHardware) -> None:
    before = cached_machine.cache_file.read_bytes()
    cached_machine.gpus = [RENAMED]

    report = cached_machine.detect(GPU_DETECTION_CACHE="false")

    assert report["cached"] is False
    assert _gpu_names(report) == ["Renamed GPU"]
    assert cached_machine.cache_file.read_bytes() == before


def test_disabled_cache_writes_no_file(hardware: FakeHardware) -> None:
    hardware.install_nvml()

    hardware.detect(GPU_DETECTION_CACHE="false")

    assert not hardware.cache_file.exists()


def test_refresh_detects_again_and_rewrites(cached_machine: FakeHardware) -> None:
    cached_machine.gpus = [RENAMED]

    refreshed = cached_machine.detect("--refresh")
    again = cached_machine.detect()

    assert refreshed["cached"] is False
    assert _gpu_names(refreshed) == ["Renamed GPU"]
    assert again["cached"] is True
    assert _gpu_names(again) == ["Renamed GPU"]


WARM_PROBE = """
import json, sys
import llamaship
from llamaship.config import resolve_settings
from llamaship.detect import load_or_detect
from llamaship.paths import DataDirs
settings = resolve_settings()
report = load_or_detect(settings, DataDirs(settings.home),
                        {"bundle": llamaship.__version__, "overlay": "none"})
heavy = ["pynvml", "subprocess", "ctypes", "llamaship.detect.nvml",
         "llamaship.detect.smi", "llamaship.detect.vulkan", "llamaship.detect.vulkan_query"]
print(json.dumps({"cached": report.cached, "imported": [m for m in heavy if m in sys.modules]}))
"""


def test_warm_path_imports_no_nvml_and_starts_no_process(cached_machine: FakeHardware) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", WARM_PROBE],
        env=cached_machine.env(),
        cwd=cached_machine.root,
        capture_output=True,
        text=True,
        check=True,
    )

    assert json.loads(result.stdout) == {"cached": True, "imported": []}


# In-process checks of the cache file and the fingerprint.


def test_fingerprint_changes_when_nvml_appears_on_ld_library_path(tmp_path: Path) -> None:
    env = {"LD_LIBRARY_PATH": str(tmp_path), "PATH": str(tmp_path)}
    before = compute_fingerprint({"bundle": "1"}, env)

    (tmp_path / "libnvidia-ml.so.1").write_bytes(b"driver")
    after = compute_fingerprint({"bundle": "1"}, env)

    assert after != before
    assert after["nvml_library"] is not None
    assert after["nvml_library"][0] == str(tmp_path / "libnvidia-ml.so.1")  # type: ignore[index]


def test_fingerprint_follows_versions_and_nvidia_smi(tmp_path: Path) -> None:
    env = {"LD_LIBRARY_PATH": str(tmp_path), "PATH": str(tmp_path)}
    base = compute_fingerprint({"bundle": "1"}, env)
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\n")
    smi.chmod(0o755)

    assert compute_fingerprint({"bundle": "1"}, env)["nvidia_smi"] is not None
    assert compute_fingerprint({"bundle": "1", "overlay": "x"}, {}) != compute_fingerprint(
        {"bundle": "1"}, {}
    )
    assert compute_fingerprint({"bundle": "1"}, env) != base
    assert json.loads(json.dumps(base)) == base  # stored as JSON, compared after a round trip


def test_fingerprint_follows_vulkan_manifests_and_the_libraries_they_name(tmp_path: Path) -> None:
    icd_dir, lib_dir = tmp_path / "icd.d", tmp_path / "lib"
    icd_dir.mkdir()
    lib_dir.mkdir()
    env = {"VK_DRIVER_FILES": str(icd_dir), "LD_LIBRARY_PATH": str(lib_dir)}
    empty = compute_fingerprint({"bundle": "1"}, env)
    manifest = icd_dir / "vendor_icd.json"
    manifest.write_text('{"ICD": {"library_path": "libvendor_vulkan.so"}}')
    named = compute_fingerprint({"bundle": "1"}, env)
    (lib_dir / "libvendor_vulkan.so").write_bytes(b"driver")  # found like the loader finds it
    installed = compute_fingerprint({"bundle": "1"}, env)

    assert empty["vulkan_drivers"] == []
    assert named != empty
    assert installed != named
    [[path, _, library]] = installed["vulkan_drivers"]  # type: ignore[misc]
    assert (path, library[0]) == (str(manifest), str(lib_dir / "libvendor_vulkan.so"))
    assert compute_fingerprint({"bundle": "1"}, {**env, "VK_LOADER_DEBUG": "all"}) != installed


def test_cache_round_trip_marks_the_report_cached(tmp_path: Path) -> None:
    path = tmp_path / "home" / ".gpu_detection_cache.json"
    fingerprint = compute_fingerprint({"bundle": "1"}, {})
    report = none_report(["nvidia-smi: not found on PATH"])

    write_cache(path, fingerprint, report)

    assert read_cache(path, fingerprint) == report.model_copy(update={"cached": True})
    assert read_cache(path, {**fingerprint, "versions": {"bundle": "2"}}) is None
    assert json.loads(path.read_text())["report"]["cached"] is False
    assert [entry.name for entry in path.parent.iterdir()] == [path.name]  # no temp file left


def test_unwritable_cache_is_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "home"
    blocker.write_text("a file where the data directory should be")

    write_cache(blocker / ".gpu_detection_cache.json", {}, none_report())

    assert "could not write the GPU detection cache" in caplog.text


def test_missing_cache_is_a_quiet_miss(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert read_cache(tmp_path / "absent.json", {}) is None
    assert caplog.text == ""

"""The cpu/cuda decision and its reasons, from detection reports and overlay requirements."""

from __future__ import annotations

import pytest

from llamaship.launch.decide import decide, default_threads, recommend
from llamaship_contract.detection import DetectionReport, GpuInfo, none_report
from llamaship_contract.overlay import OverlayRequirements

CU13 = OverlayRequirements(
    overlay_version="0.3.36-cu13.0-1",
    serial=7,
    cuda_version="13.0",
    min_driver="580.65.06",
    cuda_archs=("75", "86"),
    ptx_archs=(),
    min_vram_mb=4096,
)
CU13_NEWER = CU13.model_copy(update={"overlay_version": "0.3.36-cu13.0-2", "serial": 8})


def _gpu(index: int, name: str, capability: str, vram_mb: int) -> GpuInfo:
    return GpuInfo(
        index=index,
        name=name,
        uuid=f"GPU-{index}",
        vram_total_mb=vram_mb,
        vram_free_mb=vram_mb - 100,
        compute_capability=capability,
    )


def _report(
    *gpus: GpuInfo, driver: str | None = "580.95.05", cuda: str | None = "13.0"
) -> DetectionReport:
    return DetectionReport(
        source="nvml", driver_version=driver, cuda_driver_version=cuda, gpus=gpus
    )


RTX_3060 = _gpu(0, "NVIDIA GeForce RTX 3060", "8.6", 12288)
GTX_1060 = _gpu(0, "NVIDIA GeForce GTX 1060", "6.1", 6144)


def test_compatible_gpu_boots_cuda() -> None:
    decision = decide(_report(RTX_3060), CU13, None, None)

    assert decision.variant == "cuda"
    assert decision.upgrade_available is False
    assert "GPU 0 (NVIDIA GeForce RTX 3060)" in decision.reason
    assert "0.3.36-cu13.0-1" in decision.reason


def test_no_gpu_boots_cpu_and_offers_nothing() -> None:
    decision = decide(none_report(["nvidia-smi: not found on PATH"]), CU13, CU13_NEWER, None)

    assert decision.variant == "cpu"
    assert decision.upgrade_available is False
    assert decision.reason.startswith("no NVIDIA GPU detected")
    assert "nvidia-smi: not found on PATH" in decision.reason


def test_old_driver_boots_cpu_and_says_what_to_update() -> None:
    decision = decide(_report(RTX_3060, driver="470.82", cuda="11.4"), CU13, None, None)

    assert decision.variant == "cpu"
    assert (
        "driver 470.82 is older than 580.65.06, which the CUDA 13.0 overlay needs: "
        "update the NVIDIA driver"
    ) in decision.reason


@pytest.mark.parametrize(
    ("driver", "older"),
    [
        ("580.65.06", False),
        ("580.65.6", False),
        ("580.65.10", False),
        ("580.100", False),
        ("580.65.05", True),
        ("580.9", True),
        ("580", True),
        ("1000.1", False),
    ],
)
def test_driver_versions_compare_per_numeric_component(driver: str, older: bool) -> None:
    decision = decide(_report(RTX_3060, driver=driver), CU13, None, None)

    assert (decision.variant == "cpu") is older


def test_driver_of_an_older_cuda_major_is_refused() -> None:
    decision = decide(_report(RTX_3060, driver="580.65.06", cuda="12.9"), CU13, None, None)

    assert decision.variant == "cpu"
    assert "the driver supports CUDA 12.9 at most" in decision.reason


def test_unknown_driver_version_boots_cpu() -> None:
    decision = decide(_report(RTX_3060, driver=None, cuda=None), CU13, None, None)

    assert decision.variant == "cpu"
    assert "driver version could not be read" in decision.reason


def test_too_low_compute_capability_boots_cpu() -> None:
    decision = decide(_report(GTX_1060), CU13, None, None)

    assert decision.variant == "cpu"
    assert decision.reason.startswith(
        "GPU 0 (NVIDIA GeForce GTX 1060) has compute capability 6.1; "
        "the overlay is built for 7.5, 8.6"
    )


def test_a_pascal_gpu_on_an_old_driver_is_not_told_to_update_it() -> None:
    """No driver runs a CUDA 13 overlay on compute capability 6.1: the reason says so."""
    decision = decide(_report(GTX_1060, driver="535.104.05", cuda="12.2"), CU13, None, None)

    assert decision.variant == "cpu"
    assert "has compute capability 6.1" in decision.reason
    assert "driver" not in decision.reason


@pytest.mark.parametrize(
    ("capability", "archs", "ptx", "runs"),
    [
        ("7.5", ("75",), (), True),
        ("8.6", ("80",), (), True),  # SASS runs on a higher minor of the same major
        ("8.0", ("86",), (), False),  # ... not on a lower minor
        ("8.6", ("75",), (), False),  # ... nor on another major
        ("8.6", ("75",), ("75",), True),  # PTX is JIT-compiled for newer GPUs
        ("12.0", (), ("90",), True),
        ("7.0", (), ("75",), False),  # ... never for older ones
        ("12.0", ("120",), (), True),
        ("9.0", ("90a",), (), True),  # arch-specific code runs on that GPU only
        ("10.0", ("90a",), ("90a",), False),
    ],
)
def test_compute_capability_matching(
    capability: str, archs: tuple[str, ...], ptx: tuple[str, ...], runs: bool
) -> None:
    overlay = CU13.model_copy(update={"cuda_archs": archs, "ptx_archs": ptx})

    decision = decide(_report(_gpu(0, "GPU", capability, 8192)), overlay, None, None)

    assert (decision.variant == "cuda") is runs


def test_too_little_vram_boots_cpu() -> None:
    small = _gpu(0, "NVIDIA T400", "7.5", 2048)

    decision = decide(_report(small), CU13, None, None)

    assert decision.variant == "cpu"
    assert "GPU 0 (NVIDIA T400) has 2048 MB of VRAM; the overlay needs at least 4096 MB" in (
        decision.reason
    )


def test_best_usable_gpu_is_picked_and_named() -> None:
    gpus = (
        _gpu(0, "NVIDIA GeForce GTX 1060", "6.1", 6144),
        _gpu(1, "Tesla T4", "7.5", 15360),
        _gpu(2, "NVIDIA GeForce RTX 3090", "8.6", 24576),
    )

    decision = decide(_report(*gpus), CU13, None, None)

    assert decision.variant == "cuda"
    assert decision.reason.startswith("using GPU 2 (NVIDIA GeForce RTX 3090)")
    assert "skipped: GPU 0 (NVIDIA GeForce GTX 1060) has compute capability 6.1" in (
        decision.reason
    )


def test_every_gpu_unusable_lists_every_problem() -> None:
    gpus = (_gpu(0, "NVIDIA GeForce GTX 1060", "6.1", 6144), _gpu(1, "NVIDIA T400", "7.5", 2048))

    decision = decide(_report(*gpus), CU13, None, None)

    assert decision.variant == "cpu"
    assert "GPU 0 (NVIDIA GeForce GTX 1060) has compute capability 6.1" in decision.reason
    assert "GPU 1 (NVIDIA T400) has 2048 MB of VRAM" in decision.reason


def test_no_overlay_installed_offers_a_usable_one() -> None:
    decision = decide(_report(RTX_3060), None, CU13, None)

    assert decision.variant == "cpu"
    assert decision.upgrade_available is True
    assert decision.reason.startswith(
        "no overlay installed; upgrade available (POST /api/admin/upgrade-gpu or "
        "`llamaship overlay install`)"
    )


def test_no_overlay_installed_does_not_offer_an_unusable_one() -> None:
    decision = decide(_report(GTX_1060), None, CU13, None)

    assert decision.variant == "cpu"
    assert decision.upgrade_available is False
    assert "compute capability 6.1" in decision.reason


def test_nothing_installed_nor_available() -> None:
    decision = decide(_report(RTX_3060), None, None, None)

    assert (decision.variant, decision.upgrade_available) == ("cpu", False)
    assert "no CUDA overlay is installed" in decision.reason


def test_quarantined_overlay_boots_cpu_and_says_how_to_remove_it() -> None:
    decision = decide(_report(RTX_3060), CU13, None, "the probe crashed (signal 11)")

    assert decision.variant == "cpu"
    assert decision.upgrade_available is False
    assert decision.reason.startswith(
        "overlay 0.3.36-cu13.0-1 was quarantined: the probe crashed (signal 11); running on CPU"
    )
    assert "`llamaship overlay remove`" in decision.reason


def test_quarantined_overlay_with_a_newer_release_offers_it() -> None:
    decision = decide(_report(RTX_3060), CU13, CU13_NEWER, "the probe crashed")

    assert decision.variant == "cpu"
    assert decision.upgrade_available is True
    assert "a newer overlay 0.3.36-cu13.0-2 is available" in decision.reason


def test_quarantined_available_overlay_is_not_offered() -> None:
    decision = decide(_report(RTX_3060), None, CU13, "the probe timed out")

    assert (decision.variant, decision.upgrade_available) == ("cpu", False)
    assert "overlay 0.3.36-cu13.0-1 was quarantined: the probe timed out" in decision.reason


def test_newer_overlay_is_offered_while_cuda_runs() -> None:
    decision = decide(_report(RTX_3060), CU13, CU13_NEWER, None)

    assert (decision.variant, decision.upgrade_available) == ("cuda", True)


def test_same_or_older_release_is_not_an_upgrade() -> None:
    assert decide(_report(RTX_3060), CU13_NEWER, CU13, None).upgrade_available is False
    assert decide(_report(RTX_3060), CU13, CU13, None).upgrade_available is False


SM86 = CU13.model_copy(update={"overlay_version": "0.3.36-cu13.0-sm86-7", "cuda_archs": ("86",)})
SM120 = CU13.model_copy(update={"overlay_version": "0.3.36-cu13.0-sm120-7", "cuda_archs": ("120",)})
RTX_5090 = _gpu(0, "NVIDIA GeForce RTX 5090", "12.0", 32607)


def test_a_new_gpu_is_offered_its_architectures_overlay_of_the_same_release() -> None:
    """The RTX 3060 was swapped for an RTX 5090: the installed sm86 overlay cannot run, the
    release's sm120 overlay (same serial) is offered; while the sm86 one runs, it is not."""
    swapped = decide(_report(RTX_5090), SM86, SM120, None)
    assert (swapped.variant, swapped.upgrade_available) == ("cpu", True)
    assert "0.3.36-cu13.0-sm120-7" in swapped.reason
    assert decide(_report(RTX_3060), SM86, SM120, None).upgrade_available is False


def test_newer_release_the_gpu_cannot_use_is_not_an_upgrade() -> None:
    needs_more = CU13_NEWER.model_copy(update={"min_vram_mb": 16384})

    assert decide(_report(RTX_3060), CU13, needs_more, None).upgrade_available is False


def test_recommend_offloads_everything_on_cuda_by_default() -> None:
    layers, threads = recommend(_report(RTX_3060), "cuda", None, None)

    assert layers == -1
    assert threads == default_threads() >= 1


def test_recommend_keeps_the_users_values() -> None:
    assert recommend(_report(RTX_3060), "cuda", 20, 3) == (20, 3)


def test_recommend_never_offloads_on_cpu() -> None:
    assert recommend(_report(RTX_3060), "cpu", 20, None)[0] == 0
    assert recommend(none_report(), "cpu", None, 2) == (0, 2)


def test_default_threads_stays_within_the_usable_cpus() -> None:
    import os

    assert 1 <= default_threads() <= (os.cpu_count() or 1)

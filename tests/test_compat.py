"""The one compatibility rule, and release selection from an index offering CUDA 12 and 13."""

from __future__ import annotations

import hashlib

import pytest

from llamaship.compat import Unusable, Usable, floor_problems, judge
from llamaship.detect.libc import SystemLibraries
from llamaship.launch.decide import decide
from llamaship.overlay.select import NoMatchingOverlay, Target, pick_release
from llamaship_contract.detection import DetectionReport, GpuInfo, none_report
from llamaship_contract.overlay import LAYER_NAMES, LayerName, requirements_for
from llamaship_contract.release_index import LayerRef, ReleaseEntry

CUDA12_DRIVER = ("550.54.14", "12.4")  # CUDA 12 only
CUDA13_DRIVER = ("580.95.05", "13.0")


def _gpu(index: int, name: str, capability: str, vram_mb: int) -> GpuInfo:
    return GpuInfo(
        index=index,
        name=name,
        uuid=f"GPU-{index}",
        vram_total_mb=vram_mb,
        vram_free_mb=vram_mb - 200,
        compute_capability=capability,
    )


def _machine(*gpus: GpuInfo, driver: tuple[str, str] = CUDA13_DRIVER) -> DetectionReport:
    return DetectionReport(
        source="nvml", driver_version=driver[0], cuda_driver_version=driver[1], gpus=gpus
    )


GTX_1060 = _gpu(0, "NVIDIA GeForce GTX 1060 6GB", "6.1", 6144)
RTX_2080 = _gpu(0, "NVIDIA GeForce RTX 2080", "7.5", 8192)
RTX_4090 = _gpu(0, "NVIDIA GeForce RTX 4090", "8.9", 24564)
H100 = _gpu(0, "NVIDIA H100 80GB HBM3", "9.0", 81559)


def _layers(tag: str) -> tuple[LayerRef, ...]:
    def ref(layer: LayerName) -> LayerRef:
        sha = hashlib.sha256(f"{layer}-{tag}".encode()).hexdigest()
        return LayerRef(
            layer=layer,
            id=f"{layer}-{sha[:16]}",
            manifest=f"{layer}-{tag}.json",
            manifest_sha256=sha,
            archive=f"{layer}-{tag}.tar.zst",
        )

    return tuple(ref(layer) for layer in LAYER_NAMES)


def _entry(
    cuda: str, serial: int, archs: tuple[str, ...], ptx: tuple[str, ...], linux_driver: str
) -> ReleaseEntry:
    return ReleaseEntry(
        kind="cuda",
        overlay_version=f"0.3.36-cu{cuda}-{serial}",
        serial=serial,
        platform="linux_x86_64",
        python_tag="py3",
        llama_cpp_version="0.3.36",
        cuda_version=cuda,
        min_driver={"linux": linux_driver, "windows": "999.99"},
        cuda_archs=archs,
        ptx_archs=ptx,
        min_vram_mb=1024,
        layers=_layers(f"cu{cuda}-{serial}"),
    )


CU12 = _entry("12.4", 5, ("61", "70"), (), "525.60.13")
CU13 = _entry("13.0", 4, ("75", "80", "86", "89", "90"), ("90",), "580.65.06")
INDEX = (CU12, CU13)


DEBIAN_11 = SystemLibraries(glibc="2.31", glibcxx="3.4.28")


def _target(machine: DetectionReport, libraries: SystemLibraries = DEBIAN_11) -> Target:
    return Target(
        platform="linux_x86_64",
        os_name="linux",
        python_tags=("py3", "cp311"),
        llama_cpp_version="0.3.36",
        machine=machine,
        libraries=libraries,
    )


@pytest.mark.parametrize(
    ("machine", "chosen"),
    [
        (_machine(GTX_1060), CU12),  # cu13 has no 6.x code
        (_machine(GTX_1060, driver=CUDA12_DRIVER), CU12),
        (_machine(RTX_2080), CU13),
        (_machine(RTX_2080, driver=CUDA12_DRIVER), CU12),  # sm_70 code runs on 7.5
        (_machine(RTX_4090), CU13),
        (_machine(H100), CU13),
        (_machine(GTX_1060, RTX_4090.model_copy(update={"index": 1})), CU13),
        (_machine(GTX_1060, RTX_4090.model_copy(update={"index": 1}), driver=CUDA12_DRIVER), CU12),
    ],
    ids=[
        "gtx1060",
        "gtx1060-cuda12-driver",
        "rtx2080",
        "rtx2080-cuda12-driver",
        "rtx4090",
        "h100",
        "mixed",
        "mixed-cuda12-driver",
    ],
)
def test_the_newest_layer_this_machine_can_run_is_chosen(
    machine: DetectionReport, chosen: ReleaseEntry
) -> None:
    assert pick_release(INDEX, _target(machine), "test index") == chosen


@pytest.mark.parametrize(
    "machine",
    [
        _machine(GTX_1060),
        _machine(RTX_2080, driver=CUDA12_DRIVER),
        _machine(RTX_4090),
        _machine(H100),
        _machine(GTX_1060, RTX_4090.model_copy(update={"index": 1})),
    ],
)
def test_the_launch_decision_agrees_with_release_selection(machine: DetectionReport) -> None:
    requirements = requirements_for(pick_release(INDEX, _target(machine), "test index"), "linux")
    decision = decide(machine, None, requirements, None)
    assert decision.upgrade_available, decision.reason


def test_the_mixed_machine_runs_cu13_on_the_gpu_it_supports() -> None:
    verdict = judge(
        _machine(GTX_1060, RTX_4090.model_copy(update={"index": 1})),
        requirements_for(CU13, "linux"),
    )
    assert isinstance(verdict, Usable)
    assert [gpu.name for gpu in verdict.gpus] == [RTX_4090.name]
    assert "GPU 0 (NVIDIA GeForce GTX 1060 6GB) has compute capability 6.1" in verdict.skipped[0]


def test_a_machine_no_release_fits_is_told_each_problem() -> None:
    with pytest.raises(NoMatchingOverlay) as raised:
        pick_release(INDEX, _target(_machine(RTX_4090, driver=CUDA12_DRIVER)), "test index")
    message = str(raised.value)
    assert "0.3.36-cu12.4-5: GPU 0 (NVIDIA GeForce RTX 4090) has compute capability 8.9" in message
    assert (
        "0.3.36-cu13.0-4: driver 550.54.14 is older than 580.65.06, which the CUDA 13.0 "
        "overlay needs: update the NVIDIA driver"
    ) in message


def test_a_release_built_for_another_os_is_not_chosen() -> None:
    windows_only = CU13.model_copy(update={"min_driver": {"windows": "580.88"}})
    with pytest.raises(NoMatchingOverlay, match="names no minimum driver for linux"):
        pick_release((windows_only,), _target(_machine(RTX_4090)), "test index")


def test_a_layer_the_system_libraries_cannot_load_is_refused_before_any_download() -> None:
    """Debian 11 (glibc 2.31) is offered the layer built for it, not one that needs 2.39."""
    new_glibc = CU13.model_copy(update={"glibc_floor": "2.39", "serial": 6})
    old_glibc = CU13.model_copy(update={"glibc_floor": "2.31", "glibcxx_floor": "3.4.26"})
    debian11 = DEBIAN_11
    chosen = pick_release((new_glibc, old_glibc), _target(_machine(RTX_4090), debian11), "index")
    assert chosen == old_glibc
    with pytest.raises(NoMatchingOverlay) as raised:
        pick_release((new_glibc,), _target(_machine(RTX_4090), debian11), "index")
    assert "this system's glibc is 2.31; the overlay needs 2.39 or newer" in str(raised.value)
    assert floor_problems(SystemLibraries(glibc="2.39", glibcxx="3.4.25"), "2.31", "3.4.26") == (
        "this system's libstdc++ (GLIBCXX) is 3.4.25; the overlay needs 3.4.26 or newer: "
        "update the operating system, or keep using the CPU build",
    )
    assert floor_problems(SystemLibraries(), "2.39", "3.4.32") == ()  # unknown: not judged


@pytest.mark.parametrize(
    ("machine", "problem"),
    [
        (none_report(), "no NVIDIA GPU was detected"),
        (_machine(RTX_4090, driver=("470.82.01", "11.4")), "driver 470.82.01 is older than"),
        (_machine(RTX_4090, driver=("580.95.05", "12.9")), "the driver supports CUDA 12.9 at most"),
        (DetectionReport(source="nvml", gpus=(RTX_4090,)), "driver version could not be read"),
        (_machine(GTX_1060), "compute capability 6.1"),
        (_machine(RTX_4090.model_copy(update={"vram_total_mb": 512})), "has 512 MB of VRAM"),
    ],
)
def test_each_problem_says_what_to_do(machine: DetectionReport, problem: str) -> None:
    verdict = judge(machine, requirements_for(CU13, "linux"))
    assert isinstance(verdict, Unusable)
    assert problem in "; ".join(verdict.problems)


def test_ptx_covers_newer_gpus() -> None:
    blackwell = _gpu(0, "NVIDIA GeForce RTX 5090", "12.0", 32607)
    assert isinstance(judge(_machine(blackwell), requirements_for(CU13, "linux")), Usable)
    no_ptx = CU13.model_copy(update={"ptx_archs": ()})
    assert isinstance(judge(_machine(blackwell), requirements_for(no_ptx, "linux")), Unusable)


def _family(arch: str, ptx: tuple[str, ...] = ()) -> ReleaseEntry:
    entry = _entry("13.5", 9, (arch,), ptx, "580.65.06")
    return entry.model_copy(update={"overlay_version": f"0.3.36-cu13.5-sm{arch}-9"})


# A release of one overlay per architecture (`overlay --per-arch`), the PTX with the newest.
FAMILIES = (
    *(_family(arch) for arch in ("75", "80", "86", "89", "90", "100")),
    _family("120", ("100",)),  # ggml's 120 is 120a: the PTX for newer GPUs is compute_100
)
RTX_3060 = _gpu(0, "NVIDIA GeForce RTX 3060", "8.6", 12288)
A100 = _gpu(0, "NVIDIA A100-SXM4-40GB", "8.0", 40960)
RTX_5090 = _gpu(0, "NVIDIA GeForce RTX 5090", "12.0", 32607)
FUTURE = _gpu(0, "NVIDIA next generation", "13.0", 65536)


@pytest.mark.parametrize(
    ("gpu", "family"),
    [
        (RTX_2080, "sm75"),
        (A100, "sm80"),
        (RTX_3060, "sm86"),  # sm_80 code runs too: the closest native code wins
        (RTX_4090, "sm89"),
        (H100, "sm90"),
        (RTX_5090, "sm120"),
        (FUTURE, "sm120"),  # only the newest family's PTX runs there
    ],
    ids=["turing", "a100", "ampere-consumer", "ada", "hopper", "blackwell", "future"],
)
def test_each_gpu_gets_the_family_built_for_it(gpu: GpuInfo, family: str) -> None:
    chosen = pick_release(FAMILIES, _target(_machine(gpu)), "test index")
    assert chosen.overlay_version == f"0.3.36-cu13.5-{family}-9"


def test_a_pascal_card_gets_no_family() -> None:
    with pytest.raises(NoMatchingOverlay, match=r"compute capability 6\.1"):
        pick_release(FAMILIES, _target(_machine(GTX_1060)), "test index")

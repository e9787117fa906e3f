"""The one compatibility rule: can this machine run an overlay with these requirements?

`judge(report, requirements)` is pure: it returns `Usable` (the GPUs the overlay runs on, best
first) or `Unusable` (every problem, each a sentence saying what to do). The launch decision
(`llamaship.launch.decide`), release selection (`llamaship.overlay.select.pick_release`) and the
upgrade API (through the installer) all ask it; nothing else judges compatibility.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llamaship.detect.libc import SystemLibraries
from llamaship_contract.detection import DetectionReport, GpuInfo
from llamaship_contract.overlay import OverlayRequirements, VulkanRequirements

_ARCH = re.compile(r"(\d+)(\d)([af]?)")


@dataclass(frozen=True)
class Usable:
    """The overlay runs here: on `gpus` (most VRAM first, then lowest index; none for a Vulkan
    overlay, which runs on the chosen Vulkan device); `skipped` says why each other GPU cannot
    use it."""

    gpus: tuple[GpuInfo, ...]
    skipped: tuple[str, ...]

    @property
    def best(self) -> GpuInfo:
        return self.gpus[0]


@dataclass(frozen=True)
class Unusable:
    """The overlay cannot run here; each problem says what is wrong and what to do."""

    problems: tuple[str, ...]


Verdict = Usable | Unusable


def version_key(text: str | None) -> tuple[int, ...] | None:
    """A dotted version as numbers ("580.65.06" -> (580, 65, 6)); None if it is not one."""
    try:
        return tuple(int(part) for part in (text or "").strip().split("."))
    except ValueError:
        return None


def older(version: str, minimum: str) -> bool | None:
    """Whether dotted `version` < `minimum`, per numeric component; None if either is unparsable."""
    have, need = version_key(version), version_key(minimum)
    if have is None or need is None:
        return None
    width = max(len(have), len(need))
    return have + (0,) * (width - len(have)) < need + (0,) * (width - len(need))


def arch_runs_on(arch: str, capability: tuple[int, int], ptx: bool) -> bool:
    """Whether code built for `arch` ("75", "120", "90a") runs on a GPU of `capability`.

    SASS runs on the same major and an equal or higher minor; PTX is JIT-compiled by the
    driver for any equal or newer GPU; arch-specific ("a") code runs on that exact GPU only.
    """
    match = _ARCH.fullmatch(arch)
    if match is None:
        return False
    built = (int(match.group(1)), int(match.group(2)))
    if match.group(3) == "a":
        return built == capability
    if ptx:
        return built <= capability
    return built[0] == capability[0] and built[1] <= capability[1]


def code_fit(gpu: GpuInfo, requirements: OverlayRequirements) -> tuple[int, int]:
    """How closely an overlay's code fits `gpu`, to choose among overlays that all run on it
    (a release offers one per architecture): native code before PTX, then the newest
    architecture that runs (sm_86 code on an RTX 4090 before sm_80 code)."""
    capability = capability_of(gpu)
    if capability is None:
        return (0, 0)
    for native, archs in ((1, requirements.cuda_archs), (0, requirements.ptx_archs)):
        fitting = [_number(arch) for arch in archs if arch_runs_on(arch, capability, not native)]
        if fitting:
            return (native, max(fitting))
    return (0, 0)


def _number(arch: str) -> int:
    match = _ARCH.fullmatch(arch)
    return int(match.group(1) + match.group(2)) if match else 0


def capability_of(gpu: GpuInfo) -> tuple[int, int] | None:
    """The GPU's compute capability as (major, minor), or None when the driver gave nonsense."""
    major, _, minor = gpu.compute_capability.partition(".")
    return (int(major), int(minor)) if major.isdigit() and minor.isdigit() else None


def describe_gpu(gpu: GpuInfo) -> str:
    return f"GPU {gpu.index} ({gpu.name})"


def _dotted(arch: str) -> str:
    match = _ARCH.fullmatch(arch)
    return f"{match.group(1)}.{match.group(2)}{match.group(3)}" if match else arch


def built_for(requirements: OverlayRequirements) -> str:
    """The GPU architectures an overlay covers, for people: "7.5, 8.6 plus PTX 9.0 (...)"."""
    parts = [", ".join(_dotted(arch) for arch in requirements.cuda_archs)]
    if requirements.ptx_archs:
        ptx = ", ".join(_dotted(arch) for arch in requirements.ptx_archs)
        parts.append(f"PTX {ptx} (and newer GPUs)")
    return " plus ".join(part for part in parts if part) or "no GPU architecture"


def driver_problem(report: DetectionReport, requirements: OverlayRequirements) -> str | None:
    """Why the driver cannot run the overlay (too old, CUDA major unsupported), or None."""
    driver, cuda = report.driver_version, report.cuda_driver_version
    needs = f"the CUDA {requirements.cuda_version} overlay needs"
    if driver is None and cuda is None:
        return (
            f"the NVIDIA driver version could not be read, and {needs} driver "
            f"{requirements.min_driver} or newer: reinstall or update the NVIDIA driver"
        )
    if driver is not None and older(driver, requirements.min_driver):
        return (
            f"driver {driver} is older than {requirements.min_driver}, which {needs}: "
            "update the NVIDIA driver"
        )
    # CUDA minor version compatibility: any driver of the same CUDA major runs the overlay.
    have, need = version_key(cuda), version_key(requirements.cuda_version)
    if have and need and have[0] < need[0]:
        return (
            f"the driver supports CUDA {cuda} at most, and {needs} CUDA "
            f"{requirements.cuda_version}: update the NVIDIA driver"
        )
    return None


def gpu_problem(gpu: GpuInfo, requirements: OverlayRequirements) -> str | None:
    """Why `gpu` cannot run the overlay (architecture not covered, too little VRAM), or None."""
    capability = capability_of(gpu)
    runs = capability is not None and (
        any(arch_runs_on(arch, capability, ptx=False) for arch in requirements.cuda_archs)
        or any(arch_runs_on(arch, capability, ptx=True) for arch in requirements.ptx_archs)
    )
    if not runs:
        return (
            f"{describe_gpu(gpu)} has compute capability {gpu.compute_capability}; the "
            f"overlay is built for {built_for(requirements)}, so it cannot run on this GPU"
        )
    if gpu.vram_total_mb < requirements.min_vram_mb:
        return (
            f"{describe_gpu(gpu)} has {gpu.vram_total_mb} MB of VRAM; the overlay needs "
            f"at least {requirements.min_vram_mb} MB"
        )
    return None


def judge_vulkan(
    report: DetectionReport, requirements: VulkanRequirements, device_index: int | None
) -> Verdict:
    """Whether the chosen Vulkan device (`device_index`, from the device choice) can run a
    Vulkan overlay needing `requirements`. A usable verdict names no NVIDIA GPU."""
    devices = {device.index: device for device in report.vulkan.devices}
    if not devices:
        return Unusable(
            (
                "no Vulkan device was detected: install or update the GPU driver (it brings "
                "the Vulkan loader)",
            )
        )
    device = devices.get(device_index) if device_index is not None else None
    if device is None:
        return Unusable(
            (
                "no Vulkan device is chosen for llama.cpp (software renderers are used only "
                "when LLAMASHIP_VULKAN_DEVICE names them)",
            )
        )
    label = f"Vulkan device {device.index} ({device.name})"
    if older(device.api_version, requirements.vulkan_api):
        return Unusable(
            (
                f"{label} supports Vulkan {device.api_version}; the overlay needs "
                f"{requirements.vulkan_api} or newer: update the GPU driver",
            )
        )
    if device.memory_mb < requirements.min_vram_mb:
        return Unusable(
            (
                f"{label} has {device.memory_mb} MB of device memory; the overlay needs at "
                f"least {requirements.min_vram_mb} MB",
            )
        )
    return Usable((), ())


def floor_problems(
    libraries: SystemLibraries, glibc_floor: str | None, glibcxx_floor: str | None
) -> tuple[str, ...]:
    """Why this machine's C/C++ runtime cannot load a layer built against these floors.

    A floor or a system version that is unknown is not judged (another OS, no floor stated).
    """
    problems = []
    for library, have, need in (
        ("glibc", libraries.glibc, glibc_floor),
        ("libstdc++ (GLIBCXX)", libraries.glibcxx, glibcxx_floor),
    ):
        if have is not None and need is not None and older(have, need):
            problems.append(
                f"this system's {library} is {have}; the overlay needs {need} or newer: "
                "update the operating system, or keep using the CPU build"
            )
    return tuple(problems)


def judge(report: DetectionReport, requirements: OverlayRequirements) -> Verdict:
    """Whether the machine of `report` can run an overlay needing `requirements`, and on what."""
    if not report.gpus:
        return Unusable(
            ("no NVIDIA GPU was detected: if this machine has one, install or update its driver",)
        )
    usable: list[GpuInfo] = []
    problems: list[str] = []
    for gpu in report.gpus:
        problem = gpu_problem(gpu, requirements)
        if problem is None:
            usable.append(gpu)
        else:
            problems.append(problem)
    if not usable:  # a Pascal GPU stays unusable with any driver: no driver advice
        return Unusable(tuple(problems))
    driver = driver_problem(report, requirements)
    if driver is not None:
        return Unusable((driver,))
    usable.sort(key=lambda gpu: (-gpu.vram_total_mb, gpu.index))
    return Usable(tuple(usable), tuple(problems))

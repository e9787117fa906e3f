"""Choose the cpu or cuda variant from a detection report and an overlay's requirements."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from llamaship.boot_state import Variant
from llamaship.detect.report import DetectionReport, GpuInfo

UPGRADE_HINT = "POST /api/admin/upgrade-gpu or `llamaship overlay install`"


@dataclass(frozen=True)
class OverlayRequirements:
    """What an overlay needs from the machine (from its manifest, `min_driver` for this OS)."""

    overlay_version: str
    serial: int
    cuda_version: str
    min_driver: str
    cuda_archs: tuple[str, ...]
    ptx_archs: tuple[str, ...]
    min_vram_mb: int


@dataclass(frozen=True)
class Decision:
    """The variant to boot, a sentence saying why, and whether an overlay upgrade is offered."""

    variant: Variant
    reason: str
    upgrade_available: bool


_ARCH = re.compile(r"(\d+)(\d)([af]?)")


def _version_key(text: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(part) for part in text.strip().split("."))
    except ValueError:
        return None


def _older(version: str, minimum: str) -> bool | None:
    """Whether dotted `version` < `minimum`, per numeric component; None if either is unparsable."""
    have, need = _version_key(version), _version_key(minimum)
    if have is None or need is None:
        return None
    width = max(len(have), len(need))
    return have + (0,) * (width - len(have)) < need + (0,) * (width - len(need))


def _arch_runs_on(arch: str, capability: tuple[int, int], ptx: bool) -> bool:
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


def _capability(gpu: GpuInfo) -> tuple[int, int] | None:
    major, _, minor = gpu["compute_capability"].partition(".")
    return (int(major), int(minor)) if major.isdigit() and minor.isdigit() else None


def _dotted(arch: str) -> str:
    match = _ARCH.fullmatch(arch)
    return f"{match.group(1)}.{match.group(2)}{match.group(3)}" if match else arch


def _built_for(requirements: OverlayRequirements) -> str:
    parts = [", ".join(_dotted(arch) for arch in requirements.cuda_archs)]
    if requirements.ptx_archs:
        ptx = ", ".join(_dotted(arch) for arch in requirements.ptx_archs)
        parts.append(f"PTX {ptx} (and newer GPUs)")
    return " plus ".join(part for part in parts if part) or "no GPU architecture"


def _describe(gpu: GpuInfo) -> str:
    return f"GPU {gpu['index']} ({gpu['name']})"


def _driver_problem(report: DetectionReport, requirements: OverlayRequirements) -> str | None:
    driver, cuda = report["driver_version"], report["cuda_driver_version"]
    needs = f"the CUDA {requirements.cuda_version} overlay needs"
    if driver is None and cuda is None:
        return (f"the NVIDIA driver version could not be read, and {needs} driver "
                f"{requirements.min_driver} or newer: reinstall or update the NVIDIA driver")
    if driver is not None and _older(driver, requirements.min_driver):
        return (f"driver {driver} is older than {requirements.min_driver}, which {needs}: "
                "update the NVIDIA driver")
    # CUDA minor version compatibility: any driver of the same CUDA major runs the overlay.
    have, need = _version_key(cuda or ""), _version_key(requirements.cuda_version)
    if have and need and have[0] < need[0]:
        return (f"the driver supports CUDA {cuda} at most, and {needs} CUDA "
                f"{requirements.cuda_version}: update the NVIDIA driver")
    return None


def _gpu_problem(gpu: GpuInfo, requirements: OverlayRequirements) -> str | None:
    capability = _capability(gpu)
    runs = capability is not None and (
        any(_arch_runs_on(arch, capability, ptx=False) for arch in requirements.cuda_archs)
        or any(_arch_runs_on(arch, capability, ptx=True) for arch in requirements.ptx_archs))
    if not runs:
        return (f"{_describe(gpu)} has compute capability {gpu['compute_capability']}; the "
                f"overlay is built for {_built_for(requirements)}, so it cannot run on this GPU")
    if gpu["vram_total_mb"] < requirements.min_vram_mb:
        return (f"{_describe(gpu)} has {gpu['vram_total_mb']} MB of VRAM; the overlay needs "
                f"at least {requirements.min_vram_mb} MB")
    return None


def _match(
    report: DetectionReport, requirements: OverlayRequirements
) -> tuple[GpuInfo | None, list[str]]:
    """The best GPU `requirements` can use (most VRAM, then lowest index) and every problem."""
    driver_problem = _driver_problem(report, requirements)
    if driver_problem is not None:
        return None, [driver_problem]
    usable: list[GpuInfo] = []
    problems: list[str] = []
    for gpu in report["gpus"]:
        problem = _gpu_problem(gpu, requirements)
        if problem is None:
            usable.append(gpu)
        else:
            problems.append(problem)
    best = max(usable, key=lambda gpu: (gpu["vram_total_mb"], -gpu["index"]), default=None)
    return best, problems


def _newer_usable(
    report: DetectionReport,
    installed: OverlayRequirements,
    available: OverlayRequirements | None,
) -> OverlayRequirements | None:
    if available is None or available.serial <= installed.serial:
        return None
    return available if _match(report, available)[0] is not None else None


def _no_gpu_reason(report: DetectionReport) -> str:
    reason = "no NVIDIA GPU detected; running on CPU"
    if report["errors"]:
        reason += f" ({'; '.join(report['errors'])})"
    return reason + ". If this machine has an NVIDIA GPU, install or update its driver"


def decide(
    report: DetectionReport,
    installed: OverlayRequirements | None,
    available: OverlayRequirements | None,
    quarantine_reason: str | None,
) -> Decision:
    """Boot cuda only when the installed overlay can run on a detected GPU; else cpu, and why.

    `quarantine_reason` says why the installed overlay (or, with none installed, the available
    one) was quarantined. `upgrade_available` is true when an overlay this machine can use is
    available and newer than the installed one (or none is installed).
    """
    if not report["gpus"]:
        return Decision("cpu", _no_gpu_reason(report), False)

    if installed is None:
        if available is None:
            return Decision("cpu", "no CUDA overlay is installed and no release offers one for "
                            "this bundle; running on CPU", False)
        if quarantine_reason is not None:
            return Decision("cpu", f"overlay {available.overlay_version} was quarantined: "
                            f"{quarantine_reason}; running on CPU until a newer overlay is "
                            "released", False)
        gpu, problems = _match(report, available)
        if gpu is None:
            return Decision("cpu", "; ".join(problems) + "; running on CPU", False)
        return Decision("cpu", f"no overlay installed; upgrade available ({UPGRADE_HINT}): "
                        f"{_describe(gpu)} can use the CUDA {available.cuda_version} overlay "
                        f"{available.overlay_version}", True)

    upgrade = _newer_usable(report, installed, available)
    upgrade_note = (f"; a newer overlay {upgrade.overlay_version} is available ({UPGRADE_HINT})"
                    if upgrade is not None else "")
    if quarantine_reason is not None:
        return Decision("cpu", f"overlay {installed.overlay_version} was quarantined: "
                        f"{quarantine_reason}; running on CPU. `llamaship overlay remove` "
                        f"deletes it{upgrade_note}", upgrade is not None)
    gpu, problems = _match(report, installed)
    if gpu is None:
        reason = "; ".join(problems) + f"; running on CPU{upgrade_note}"
        return Decision("cpu", reason, upgrade is not None)
    reason = (f"using {_describe(gpu)}, compute capability {gpu['compute_capability']}, "
              f"{gpu['vram_total_mb']} MB, with the CUDA {installed.cuda_version} overlay "
              f"{installed.overlay_version}")
    if problems:
        reason += f" (skipped: {'; '.join(problems)})"
    return Decision("cuda", reason + upgrade_note, upgrade is not None)


def _physical_cores() -> int | None:
    """Distinct (package, core) pairs in /proc/cpuinfo; None where that file does not exist."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    cores: set[tuple[str, str]] = set()
    package = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            package = value.strip()
        elif key == "core id":
            cores.add((package, value.strip()))
    return len(cores) or None


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_threads() -> int:
    """Generation threads: the physical cores this process may use (hyper-threads slow it)."""
    usable = _usable_cpus()
    physical = _physical_cores()
    return max(1, min(physical, usable) if physical else usable)


def recommend(
    report: DetectionReport,
    variant: Variant,
    n_gpu_layers_setting: int | None,
    n_threads_setting: int | None,
) -> tuple[int, int]:
    """(n_gpu_layers, n_threads): the user's settings where given, else sensible defaults.

    The CPU variant offloads nothing; the cuda variant offloads every layer (-1) by default.
    """
    if variant == "cuda" and report["gpus"]:
        layers = -1 if n_gpu_layers_setting is None else n_gpu_layers_setting
    else:
        layers = 0
    threads = default_threads() if n_threads_setting is None else max(1, n_threads_setting)
    return layers, threads

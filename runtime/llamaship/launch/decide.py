"""Choose the cpu or cuda variant from a detection report and an overlay's requirements."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from llamaship.compat import Usable, describe_gpu, judge
from llamaship.launch.outcome import Variant
from llamaship_contract.detection import DetectionReport, GpuInfo
from llamaship_contract.overlay import OverlayRequirements

UPGRADE_HINT = "POST /api/admin/upgrade-gpu or `llamaship overlay install`"


@dataclass(frozen=True)
class Decision:
    """The variant to boot, a sentence saying why, and whether an overlay upgrade is offered."""

    variant: Variant
    reason: str
    upgrade_available: bool


def _match(
    report: DetectionReport, requirements: OverlayRequirements
) -> tuple[GpuInfo | None, list[str]]:
    """The best GPU `requirements` can use and every problem, by the one compatibility rule."""
    verdict = judge(report, requirements)
    if isinstance(verdict, Usable):
        return verdict.best, list(verdict.skipped)
    return None, list(verdict.problems)


def _newer_usable(
    report: DetectionReport,
    installed: OverlayRequirements,
    available: OverlayRequirements | None,
) -> OverlayRequirements | None:
    """The offer, when it runs here and is newer, or is the same release's overlay for
    another architecture while the installed one cannot run here (a new GPU)."""
    if available is None or available.overlay_version == installed.overlay_version:
        return None
    if available.serial < installed.serial or not isinstance(judge(report, available), Usable):
        return None
    if available.serial > installed.serial:
        return available
    return None if isinstance(judge(report, installed), Usable) else available


def _no_gpu_reason(report: DetectionReport) -> str:
    reason = "no NVIDIA GPU detected; running on CPU"
    if report.errors:
        reason += f" ({'; '.join(report.errors)})"
    return reason + ". If this machine has an NVIDIA GPU, install or update its driver"


def decide(
    report: DetectionReport,
    installed: OverlayRequirements | None,
    available: OverlayRequirements | None,
    quarantine_reason: str | None,
    unchecked: str | None = None,
    refused: str | None = None,
) -> Decision:
    """Boot cuda only when the installed overlay can run on a detected GPU; else cpu, and why.

    `quarantine_reason` says why the installed overlay (or, with none installed, the available
    one) was quarantined. `upgrade_available` is true when an overlay this machine can use is
    available and newer than the installed one (or none is installed). `unchecked` says why no
    release index was read (then `available` is None for that reason, not for want of one);
    `refused` why the index read offers none this machine can run.
    """
    if not report.gpus:
        return Decision("cpu", _no_gpu_reason(report), False)

    if installed is None:
        if available is None and unchecked is not None:
            return Decision(
                "cpu", f"no CUDA overlay is installed and {unchecked}; running on CPU", False
            )
        if available is None and refused is not None:
            return Decision(
                "cpu",
                f"no CUDA overlay is installed and none fits: {refused}; running on CPU",
                False,
            )
        if available is None:
            return Decision(
                "cpu",
                "no CUDA overlay is installed and no release offers one for "
                "this bundle; running on CPU",
                False,
            )
        if quarantine_reason is not None:
            return Decision(
                "cpu",
                f"overlay {available.overlay_version} was quarantined: "
                f"{quarantine_reason}; running on CPU until a newer overlay is "
                "released",
                False,
            )
        gpu, problems = _match(report, available)
        if gpu is None:
            return Decision("cpu", "; ".join(problems) + "; running on CPU", False)
        return Decision(
            "cpu",
            f"no overlay installed; upgrade available ({UPGRADE_HINT}): "
            f"{describe_gpu(gpu)} can use the CUDA {available.cuda_version} overlay "
            f"{available.overlay_version}",
            True,
        )

    upgrade = _newer_usable(report, installed, available)
    upgrade_note = (
        f"; a newer overlay {upgrade.overlay_version} is available ({UPGRADE_HINT})"
        if upgrade is not None
        else ""
    )
    if quarantine_reason is not None:
        return Decision(
            "cpu",
            f"overlay {installed.overlay_version} was quarantined: "
            f"{quarantine_reason}; running on CPU. `llamaship overlay remove` "
            f"deletes it{upgrade_note}",
            upgrade is not None,
        )
    gpu, problems = _match(report, installed)
    if gpu is None:
        reason = "; ".join(problems) + f"; running on CPU{upgrade_note}"
        return Decision("cpu", reason, upgrade is not None)
    reason = (
        f"using {describe_gpu(gpu)}, compute capability {gpu.compute_capability}, "
        f"{gpu.vram_total_mb} MB, with the CUDA {installed.cuda_version} overlay "
        f"{installed.overlay_version}"
    )
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

    The CPU variant offloads nothing; a GPU variant offloads every layer (-1) by default.
    """
    if (variant == "cuda" and report.gpus) or variant == "vulkan":
        layers = -1 if n_gpu_layers_setting is None else n_gpu_layers_setting
    else:
        layers = 0
    threads = default_threads() if n_threads_setting is None else max(1, n_threads_setting)
    return layers, threads

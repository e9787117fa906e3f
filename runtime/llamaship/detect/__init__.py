"""GPU detection: NVML, then nvidia-smi, then none; and the Vulkan loader's devices (in a
child process); cached between launches.

`load_or_detect` runs on every launch: on a cache hit it neither imports nvidia-ml-py nor starts
a process.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from llamaship.detect.errors import DetectionError, SourceMissing

if TYPE_CHECKING:
    from llamaship.config import Settings
    from llamaship.paths import DataDirs
    from llamaship_contract.detection import DetectionReport, VulkanReport

# The report's contract (pydantic) is imported when detection runs, not with this package:
# the `vulkan-devices` child imports `llamaship.detect.errors` and nothing heavy.
__all__ = ["detect_gpus", "load_or_detect"]

logger = logging.getLogger(__name__)


def _detect_nvidia(timeout: float) -> tuple[DetectionReport, bool]:
    """Try each NVIDIA source in turn; also say whether the answer is worth caching.

    "No GPU" is worth caching only when every source is absent, not when one failed (a hung
    or broken driver may answer at the next launch).
    """
    from llamaship.detect.nvml import read_nvml
    from llamaship.detect.smi import read_nvidia_smi
    from llamaship_contract.detection import none_report

    errors: list[str] = []
    conclusive = True
    for read in (read_nvml, lambda: read_nvidia_smi(timeout)):
        try:
            report = read()
        except DetectionError as error:
            logger.debug("GPU detection: %s", error)
            errors.append(str(error))
            conclusive = conclusive and isinstance(error, SourceMissing)
        else:
            return report.model_copy(update={"errors": tuple(errors)}), True
    return none_report(errors), conclusive


def _detect(timeout: float) -> tuple[DetectionReport, bool]:
    """NVIDIA and Vulkan detection (the Vulkan child runs meanwhile); worth caching only when
    both answers are."""
    import threading

    from llamaship.detect.vulkan import detect_vulkan

    vulkan: list[tuple[VulkanReport, bool]] = []
    thread = threading.Thread(target=lambda: vulkan.append(detect_vulkan(timeout)), daemon=True)
    thread.start()
    report, conclusive = _detect_nvidia(timeout)
    thread.join()
    vulkan_report, vulkan_conclusive = vulkan[0]
    for error in vulkan_report.errors:
        logger.debug("GPU detection: %s", error)
    return (
        report.model_copy(update={"vulkan": vulkan_report}),
        conclusive and vulkan_conclusive,
    )


def detect_gpus(timeout: float) -> DetectionReport:
    """Detect the GPUs now; nvidia-smi and the Vulkan query may each take `timeout` seconds."""
    return _detect(timeout)[0]


def load_or_detect(
    settings: Settings,
    dirs: DataDirs,
    versions: Mapping[str, str],
    refresh: bool = False,
) -> DetectionReport:
    """The cached report when it is still valid, else a fresh detection (cached if conclusive).

    `versions` (e.g. {"bundle": ..., "overlay": ...}) join the fingerprint: a new bundle or
    overlay detects again. `refresh` skips reading the cache; GPU_DETECTION_CACHE=false skips
    reading and writing it.
    """
    from llamaship.detect.cache import read_cache, write_cache
    from llamaship.detect.fingerprint import compute_fingerprint

    fingerprint = compute_fingerprint(versions)
    if settings.detection_cache and not refresh:
        cached = read_cache(dirs.detection_cache, fingerprint)
        if cached is not None:
            return cached
    report, conclusive = _detect(settings.detection_timeout)
    if settings.detection_cache and conclusive:
        write_cache(dirs.detection_cache, fingerprint, report)
    return report

"""GPU detection: NVML, then nvidia-smi, then none; cached between launches.

`load_or_detect` runs on every launch: on a cache hit it neither imports nvidia-ml-py nor starts
a process.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from llamaship.detect.cache import read_cache, write_cache
from llamaship.detect.errors import DetectionError, SourceMissing
from llamaship.detect.fingerprint import compute_fingerprint
from llamaship_contract.detection import DetectionReport, none_report

if TYPE_CHECKING:
    from llamaship.config import Settings
    from llamaship.paths import DataDirs

logger = logging.getLogger(__name__)


def _detect(timeout: float) -> tuple[DetectionReport, bool]:
    """Try each source in turn; also say whether the answer is worth caching.

    "No GPU" is worth caching only when every source is absent, not when one failed (a hung
    or broken driver may answer at the next launch).
    """
    from llamaship.detect.nvml import read_nvml
    from llamaship.detect.smi import read_nvidia_smi

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


def detect_gpus(timeout: float) -> DetectionReport:
    """Detect the NVIDIA driver and GPUs now; nvidia-smi may take at most `timeout` seconds."""
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
    fingerprint = compute_fingerprint(versions)
    if settings.detection_cache and not refresh:
        cached = read_cache(dirs.detection_cache, fingerprint)
        if cached is not None:
            return cached
    report, conclusive = _detect(settings.detection_timeout)
    if settings.detection_cache and conclusive:
        write_cache(dirs.detection_cache, fingerprint, report)
    return report

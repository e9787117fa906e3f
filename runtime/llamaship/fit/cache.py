"""The fit cache: a plan that loaded, kept per GPUs, driver, build, model and context.

One small JSON file per key under `LLAMASHIP_HOME/state/fit-cache/`, named by the key's hash.
A hit costs a `stat()` of the model and one file read: the next launch skips the fit.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llamaship.fit.devices import FitDevice, devices_for
from llamaship_contract.detection import DetectionReport
from llamaship_contract.document import dump_document, dump_document_pretty, parse_document
from llamaship_contract.errors import ContractError
from llamaship_contract.fit import FitCacheKey, FitCacheRecord, FitPlan

_log = logging.getLogger(__name__)
CACHE_DIR = Path("state") / "fit-cache"


def as_report(report: DetectionReport | Mapping[str, Any]) -> DetectionReport:
    """The detection report, parsed if it comes as decoded JSON (as `BootState` keeps it)."""
    if isinstance(report, DetectionReport):
        return report
    return parse_document(DetectionReport, report, "the detection report")


def cache_key(
    report: DetectionReport | Mapping[str, Any],
    variant: str,
    model_path: Path,
    n_ctx: int,
    *,
    margin_mb: int,
    overlay_version: str | None,
    llama_cpp_version: str,
    devices: Sequence[FitDevice] | None = None,
) -> FitCacheKey:
    """The key of a fit for this machine, build, model file (size and mtime) and context.

    `devices`: the GPUs planned for (default: the report's devices of `variant`).
    """
    report = as_report(report)
    gpus = devices_for(variant, report) if devices is None else devices
    stat = model_path.stat()
    return FitCacheKey(
        gpu_uuids=tuple(gpu.identity for gpu in gpus),
        gpu_vram_total_mb=tuple(gpu.total_mb for gpu in gpus),
        driver_version=report.driver_version,
        variant=variant,
        overlay_version=overlay_version,
        llama_cpp_version=llama_cpp_version,
        model_path=os.fspath(model_path.resolve()),
        model_size=stat.st_size,
        model_mtime_ns=stat.st_mtime_ns,
        n_ctx=n_ctx,
        margin_mb=margin_mb,
    )


def cache_file(home: Path, key: FitCacheKey) -> Path:
    """Where the plan for `key` is kept."""
    digest = hashlib.sha256(dump_document(key)).hexdigest()[:32]
    return home / CACHE_DIR / f"{digest}.json"


def lookup(home: Path, key: FitCacheKey) -> FitPlan | None:
    """The cached plan for `key` (its source set to "cache"), or None."""
    path = cache_file(home, key)
    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        record = parse_document(FitCacheRecord, data, str(path))
    except ContractError as error:
        _log.warning("ignoring the fit cache file: %s", error)
        return None
    if record.key != key:
        return None
    plan = record.plan
    reason = (
        plan.reason
        if plan.source == "cache"
        else f"kept from an earlier launch where it loaded ({plan.source}: {plan.reason})"
    )
    return plan.model_copy(update={"source": "cache", "applied": True, "reason": reason})


def remember(plan: FitPlan, key: FitCacheKey, home: Path) -> Path:
    """Keep `plan` (it loaded) for `key`: written to a temporary name, then renamed into place."""
    path = cache_file(home, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_bytes(dump_document_pretty(FitCacheRecord(key=key, plan=plan)))
    os.replace(temporary, path)
    return path


def forget(key: FitCacheKey, home: Path) -> None:
    """Drop the plan kept for `key` (it failed to load)."""
    cache_file(home, key).unlink(missing_ok=True)

"""Probe an overlay before its first activation and again after the driver changes.

The record (`state/probe.json`, a `ProbeRecord`) says which overlay layers passed with which
driver; the installer writes it after its own probe, so the launch after an install does not
probe again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from llamaship.detect.fingerprint import compute_fingerprint
from llamaship.io.fs import atomic_write_bytes
from llamaship.launch import probe
from llamaship.overlay.installed import InstalledOverlay
from llamaship.paths import DataDirs
from llamaship_contract.document import dump_document_pretty, parse_document
from llamaship_contract.errors import ContractError
from llamaship_contract.launch import ProbeKey, ProbeRecord, ProbeResult

_log = logging.getLogger(__name__)
PROBE_RECORD = "probe.json"
PROBE_TIMEOUT_S = 120.0  # first CUDA initialisation can be slow
ProbeRunner = Callable[[Path, Path, float], ProbeResult | None]
"""`(module, runtime_lib_dir, timeout_s)`; raises a LlamashipError when the overlay fails."""


def probe_key(overlay: InstalledOverlay) -> ProbeKey:
    """What a passed probe vouches for: these overlay layers with this driver and these GPUs."""
    driver = json.loads(json.dumps(compute_fingerprint({})))  # as it reads back from JSON
    return ProbeKey(
        overlay_version=overlay.overlay_version, layers=dict(overlay.layers), driver=driver
    )


def read_record(dirs: DataDirs) -> ProbeRecord | None:
    """The probe record; a missing or unreadable one is None (then the overlay is probed)."""
    path = dirs.state / PROBE_RECORD
    try:
        return parse_document(ProbeRecord, path.read_bytes(), str(path))
    except FileNotFoundError:
        return None
    except (OSError, ContractError) as error:
        _log.warning("ignoring an unreadable probe record: %s", error)
        return None


def record_passed(
    overlay: InstalledOverlay,
    dirs: DataDirs,
    by: Literal["install", "launch"],
    result: ProbeResult | None = None,
) -> ProbeRecord:
    """Remember that `overlay` passed its probe with this driver (and what the probe saw)."""
    record = ProbeRecord(key=probe_key(overlay), by=by, at=datetime.now(UTC), result=result)
    atomic_write_bytes(dirs.state / PROBE_RECORD, dump_document_pretty(record))
    return record


def ensure_probed(
    overlay: InstalledOverlay, dirs: DataDirs, run: ProbeRunner = probe.run_probe
) -> ProbeRecord:
    """The record of a probe that passed for this overlay and driver: the earlier one (the
    installer's or a launch's), else a new probe's. Raises `ProbeFailed` when it fails."""
    record = read_record(dirs)
    if record is not None and record.key == probe_key(overlay):
        _log.info(
            "overlay %s passed its probe with this driver before (%s, %s): not probing",
            overlay.overlay_version,
            record.by,
            record.at.isoformat(timespec="seconds"),
        )
        return record
    _log.info("probing overlay %s in a subprocess", overlay.overlay_version)
    return record_passed(
        overlay, dirs, "launch", run(overlay.module, overlay.runtime_lib_dir, PROBE_TIMEOUT_S)
    )

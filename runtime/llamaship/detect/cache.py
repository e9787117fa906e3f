"""The detection cache file: a report plus the fingerprint it is valid for."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from llamaship.detect.fingerprint import Fingerprint
from llamaship.detect.report import DetectionReport, parse_report

CACHE_SCHEMA = 1

logger = logging.getLogger(__name__)


def read_cache(path: Path, fingerprint: Fingerprint) -> DetectionReport | None:
    """The cached report if `path` holds one for this exact fingerprint, else None.

    A missing, unreadable, corrupt, foreign or stale file is a cache miss, never an error.
    """
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as problem:
        logger.info("ignoring unreadable GPU detection cache %s (%s); detecting again",
                    path, problem)
        return None
    if not isinstance(data, dict) or data.get("schema") != CACHE_SCHEMA:
        logger.info("ignoring GPU detection cache %s: not a schema %d cache file; "
                    "detecting again", path, CACHE_SCHEMA)
        return None
    stored = data.get("fingerprint")
    if stored != fingerprint:
        if isinstance(stored, dict):
            changed = sorted(key for key in {*stored, *fingerprint}
                             if stored.get(key) != fingerprint.get(key))
        else:
            changed = ["fingerprint"]
        logger.debug("GPU detection cache %s is stale (changed: %s)", path, ", ".join(changed))
        return None
    try:
        report = parse_report(data.get("report"))
    except (TypeError, ValueError) as problem:
        logger.info("ignoring GPU detection cache %s: %s; detecting again", path, problem)
        return None
    report["cached"] = True
    return report


def write_cache(path: Path, fingerprint: Fingerprint, report: DetectionReport) -> None:
    """Store `report` atomically (temp file + os.replace); a failure is logged, not raised."""
    stored: DetectionReport = {**report, "cached": False}
    payload = json.dumps({"schema": CACHE_SCHEMA, "fingerprint": fingerprint, "report": stored},
                         indent=1, sort_keys=True).encode()
    temporary: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f"{path.name}.", suffix=".tmp",
                                                 dir=path.parent)
        with os.fdopen(descriptor, "wb") as file:
            file.write(payload)
        # No fsync: a file torn by a power cut only costs one detection (a corrupt cache is a miss).
        os.replace(temporary, path)
    except OSError as problem:
        logger.warning("could not write the GPU detection cache %s: %s", path, problem)
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)

"""The detection cache file: a report plus the fingerprint it is valid for."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from llamaship.detect.fingerprint import Fingerprint
from llamaship_contract.detection import DetectionReport
from llamaship_contract.document import dump_document_pretty, parse_document
from llamaship_contract.errors import ContractError
from llamaship_contract.state import DetectionCache

logger = logging.getLogger(__name__)


def read_cache(path: Path, fingerprint: Fingerprint) -> DetectionReport | None:
    """The cached report if `path` holds one for this exact fingerprint, else None.

    A missing, unreadable, corrupt, foreign or stale file is a cache miss, never an error.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as problem:
        logger.info(
            "ignoring unreadable GPU detection cache %s (%s); detecting again", path, problem
        )
        return None
    try:
        cache = parse_document(DetectionCache, data, f"GPU detection cache {path}")
    except ContractError as problem:
        logger.info("ignoring %s; detecting again", problem)
        return None
    stored = cache.fingerprint
    if stored != fingerprint:
        changed = sorted(
            key for key in {*stored, *fingerprint} if stored.get(key) != fingerprint.get(key)
        )
        logger.debug("GPU detection cache %s is stale (changed: %s)", path, ", ".join(changed))
        return None
    return cache.report.model_copy(update={"cached": True})


def write_cache(path: Path, fingerprint: Fingerprint, report: DetectionReport) -> None:
    """Store `report` atomically (temp file + os.replace); a failure is logged, not raised."""
    stored = report.model_copy(update={"cached": False})
    payload = dump_document_pretty(DetectionCache(fingerprint=fingerprint, report=stored))
    temporary: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(
            prefix=f"{path.name}.", suffix=".tmp", dir=path.parent
        )
        with os.fdopen(descriptor, "wb") as file:
            file.write(payload)
        # No fsync: a file torn by a power cut only costs one detection (a corrupt cache is a miss).
        os.replace(temporary, path)
    except OSError as problem:
        logger.warning("could not write the GPU detection cache %s: %s", path, problem)
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)

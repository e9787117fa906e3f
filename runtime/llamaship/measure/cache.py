"""Measurements cached per model x variant x driver under `LLAMASHIP_HOME/state/measurements/`.

A model is known by its size, modification time and the sha256 of its first MiB
(`model_identity`): cheap at every start, and a changed file is measured again. The file name
holds a hash of the key; the document inside is checked against the key when read.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from llamaship.io.fs import atomic_write_bytes
from llamaship.paths import DataDirs
from llamaship_contract.document import dump_document_pretty, parse_document
from llamaship_contract.errors import ContractError
from llamaship_contract.measure import GpuVariant, ModelIdentity, VariantMeasurement

logger = logging.getLogger(__name__)

HEAD_BYTES = 2**20


def model_identity(model: Path) -> ModelIdentity:
    """The model's identity: size, mtime and the sha256 of its first MiB (`OSError` if it
    cannot be read)."""
    with model.open("rb") as handle:
        stat = model.stat()
        head = handle.read(HEAD_BYTES)
    return ModelIdentity(
        path=str(model),
        size=stat.st_size,
        mtime_ns=stat.st_mtime_ns,
        head_sha256=hashlib.sha256(head).hexdigest(),
    )


def _same_model(first: ModelIdentity, second: ModelIdentity) -> bool:
    """The same file content, wherever it lies (a moved file keeps its measurement)."""
    return (first.size, first.mtime_ns, first.head_sha256) == (
        second.size,
        second.mtime_ns,
        second.head_sha256,
    )


def cache_key(model: ModelIdentity, variant: GpuVariant, driver: str) -> str:
    """The hex sha256 naming the cache file of this model, variant and driver."""
    key = [model.size, model.mtime_ns, model.head_sha256, variant, driver]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()


class MeasurementCache:
    """The cached measurements under one LLAMASHIP_HOME."""

    def __init__(self, dirs: DataDirs) -> None:
        self._directory = dirs.measurements

    def path(self, model: ModelIdentity, variant: GpuVariant, driver: str) -> Path:
        return self._directory / f"{variant}-{cache_key(model, variant, driver)[:32]}.json"

    def load(
        self, model: ModelIdentity, variant: GpuVariant, driver: str
    ) -> VariantMeasurement | None:
        """The measurement of this model, variant and driver, or None (none, or unreadable:
        it is measured again)."""
        path = self.path(model, variant, driver)
        try:
            found = parse_document(VariantMeasurement, path.read_bytes(), str(path))
        except FileNotFoundError:
            return None
        except (OSError, ContractError) as error:
            logger.warning("ignoring the measurement %s: %s", path, error)
            return None
        if (
            found.variant != variant
            or found.driver != driver
            or not _same_model(found.model, model)
        ):
            logger.warning("ignoring the measurement %s: it is of another model or driver", path)
            return None
        return found

    def save(self, measurement: VariantMeasurement) -> Path:
        """Write `measurement` atomically; its path."""
        path = self.path(measurement.model, measurement.variant, measurement.driver)
        atomic_write_bytes(path, dump_document_pretty(measurement))
        return path

"""The launch's measured choice in one call: the rule's GPU variant, the cache, the setting.

`measured_choice` reads the configured model's identity (size, mtime, first MiB) and the cached
measurement, then applies `verdict.choose`. It imports no llama.cpp: the launch calls it before
`llama_cpp` is imported, and hands `measure` (what to measure once the server is up) and
`measurement` (the cached result it followed) to the backend through the boot state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from llamaship.config import Settings
from llamaship.measure.cache import MeasurementCache, model_identity
from llamaship.measure.run import MeasureRequest, VariantSetup
from llamaship.measure.verdict import choose
from llamaship.paths import DataDirs
from llamaship_contract.measure import MeasuredVariant, VariantMeasurement

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MeasuredChoice:
    """The variant to boot, why (None: the compatibility rule's reason stands), what to
    measure once the server is up, and the cached measurement the choice followed."""

    variant: MeasuredVariant
    reason: str | None
    measure: MeasureRequest | None
    measurement: VariantMeasurement | None


def measured_choice(
    settings: Settings, dirs: DataDirs, gpu: VariantSetup | None, driver: str, n_threads: int
) -> MeasuredChoice:
    """Apply the measured choice to the compatibility rule's GPU variant `gpu` (None: the rule
    chose the CPU build) on the driver `driver` (e.g. the Vulkan driver version and device)."""
    if gpu is None or gpu.variant == "cpu":
        return MeasuredChoice("cpu", None, None, None)
    variant = gpu.variant
    model = settings.model
    identity = None
    if model is not None and settings.variant_choice == "measured":
        try:
            identity = model_identity(model)
        except OSError as error:  # the engine reports a bad model file; nothing to measure
            logger.info("not measuring %s: cannot read %s (%s)", variant, model, error)
    cached = None if identity is None else MeasurementCache(dirs).load(identity, variant, driver)
    verdict = choose(
        variant, settings.variant_choice, has_model=identity is not None, measurement=cached
    )
    request = (
        MeasureRequest(model, gpu, driver, n_threads)
        if verdict.measure and model is not None
        else None
    )
    return MeasuredChoice(verdict.variant, verdict.reason, request, cached)

"""What the bootstrap decided at launch; the backend reports it in /api/capabilities.

`BootState.health` is how the engine tells the launch that the active variant works: it calls
`health.loading(model, plan)` around each model load and `health.generated()` once a token was
generated (or an embedding computed). The first `generated()` makes the launch healthy, which
gives the overlay all its boot-counting tries back. `previous_load_failure(model)` answers "did
an earlier launch die while loading this model?", so the engine can start from a smaller plan.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from llamaship.config import Settings
from llamaship.io.trusted_keys import bundled_trusted_keys
from llamaship.measure.run import MeasureRequest
from llamaship.paths import DataDirs
from llamaship_contract.detection import DetectionReport
from llamaship_contract.launch import LaunchProcess
from llamaship_contract.measure import VariantMeasurement
from llamaship_contract.trust import TrustedKeys

Variant = Literal["cpu", "cuda", "vulkan"]


class LaunchHealth(Protocol):
    """The launch's health hook, called by the engine (from any thread)."""

    def loading(
        self, model: Path, plan: Mapping[str, Any] | None = None
    ) -> AbstractContextManager[None]:
        """Around one model load: a crash inside counts against the overlay; an exception
        (the load failed, the process lives on) does not."""

    def generated(self) -> None:
        """A token was generated (or an embedding computed) on the active variant."""


class NoHealthTracking:
    """The hook of a state built without a launch (tests, tools): does nothing."""

    def loading(
        self, model: Path, plan: Mapping[str, Any] | None = None
    ) -> AbstractContextManager[None]:
        return nullcontext()

    def generated(self) -> None:
        return None


@dataclass
class BootState:
    """The outcome of `llamaship.launch.bootstrap.boot()`; mutable only through its own methods."""

    settings: Settings
    dirs: DataDirs
    report: DetectionReport
    decision: Variant
    reason: str
    upgrade_available: bool
    active_variant: Variant
    overlay_version: str | None
    llama_cpp_version: str
    llama_cpp_path: Path
    gpu_offload: bool
    n_gpu_layers: int
    n_threads: int
    events: list[str] = field(default_factory=list)
    cpu_backend: str | None = None
    health: LaunchHealth = field(default_factory=NoHealthTracking)
    last_failure: LaunchProcess | None = None
    """The last launch of the active overlay that died while booting or loading (boot count)."""
    trusted_keys: TrustedKeys = field(default_factory=bundled_trusted_keys)
    """The release keys overlays must be signed with: the bundled ones unless `boot()` was
    given others through the Python API."""
    measure: MeasureRequest | None = None
    """A GPU variant usable but unmeasured for the model and driver: the backend measures it
    against the CPU build once the server is up (`llamaship.measure.job`)."""
    measurement: VariantMeasurement | None = None
    """The cached measurement this launch's choice followed, if any."""

    def previous_load_failure(self, model: Path) -> LaunchProcess | None:
        """The earlier launch that died while loading `model` on this overlay, with the plan
        it used (`.plan`), if that is the overlay's last failure and no launch was healthy
        since. The engine then starts from a smaller plan before the overlay is quarantined."""
        failure = self.last_failure
        if failure is None or failure.phase != "loading" or failure.model is None:
            return None
        return failure if _same_file(Path(failure.model), model) else None


def _same_file(first: Path, second: Path) -> bool:
    try:
        return first.samefile(second)
    except OSError:
        return first == second

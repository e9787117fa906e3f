"""Where the runtime keeps its files, all under LLAMASHIP_HOME."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataDirs:
    """Every path the runtime writes; nothing is written outside `home`."""

    home: Path

    @property
    def detection_cache(self) -> Path:
        return self.home / ".gpu_detection_cache.json"

    @property
    def overlays(self) -> Path:
        return self.home / "overlays"

    @property
    def downloads(self) -> Path:
        return self.home / "downloads"

    @property
    def state(self) -> Path:
        return self.home / "state"

    @property
    def measurements(self) -> Path:
        """Cached GPU-variant measurements, one file per model x variant x driver."""
        return self.state / "measurements"

    @property
    def locks(self) -> Path:
        return self.home / "locks"

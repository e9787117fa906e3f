"""What the bootstrap decided at launch; the backend reports it in /api/capabilities."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from llamaship.config import Settings
from llamaship.paths import DataDirs

Variant = Literal["cpu", "cuda"]


@dataclass
class BootState:
    """The outcome of `llamaship.bootstrap.boot()`; mutable only through its own methods."""

    settings: Settings
    dirs: DataDirs
    report: dict[str, Any]
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

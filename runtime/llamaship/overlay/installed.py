"""An installed CUDA overlay as the store hands it out: its pointer and its layer directories.

Kept apart from the store (`llamaship.overlay.store`), which reads and changes the files.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from llamaship_contract.overlay import OverlayRequirements
from llamaship_contract.state import OverlayPointer

RUNTIME_LAYER = "cuda-runtime"
LLAMA_LAYER = "llama-cuda"

OverlayRecord = OverlayPointer
"""What a pointer file (`active.json`, `previous.json`) says an overlay is made of."""


@dataclass(frozen=True)
class AcceptedSerials:
    """The newest release index and layer manifest serials this machine has accepted."""

    index: int = 0
    manifest: int = 0


@dataclass(frozen=True)
class InstalledOverlay:
    """An overlay whose pointer is valid and whose layer directories exist."""

    record: OverlayRecord
    llama_dir: Path
    runtime_lib_dir: Path

    @property
    def overlay_version(self) -> str:
        return self.record.overlay_version

    @property
    def serial(self) -> int:
        return self.record.serial

    @property
    def llama_cpp_version(self) -> str:
        return self.record.llama_cpp_version

    @property
    def requirements(self) -> OverlayRequirements:
        return self.record.requirements

    @property
    def layers(self) -> Mapping[str, str]:
        return self.record.layers


def runtime_lib_subdir() -> str:
    """Where the cuda-runtime layer keeps its libraries on this OS (the loader's search dir)."""
    return "bin" if sys.platform == "win32" else "lib"

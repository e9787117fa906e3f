"""An installed CUDA overlay as the store hands it out: its pointer, the backend module its
`llama-cuda` layer holds and the library folder of its `cuda-runtime` layer.

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
# The CUDA backend module in the llama-cuda layer, per OS (the bundle's ggml loads it).
_MODULE_NAMES = {"win32": "ggml-cuda.dll"}

OverlayRecord = OverlayPointer
"""What a pointer file (`active.json`, `previous.json`) says an overlay is made of."""


@dataclass(frozen=True)
class AcceptedSerials:
    """The newest release index and layer manifest serials this machine has accepted."""

    index: int = 0
    manifest: int = 0


@dataclass(frozen=True)
class InstalledOverlay:
    """An overlay whose pointer is valid and whose backend module and runtime folder exist."""

    record: OverlayRecord
    module: Path
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


def cuda_module_path(system: str = sys.platform) -> str:
    """The backend module's path in the llama-cuda layer (`backends/libggml-cuda.so`)."""
    return f"backends/{_MODULE_NAMES.get(system, 'libggml-cuda.so')}"


def runtime_lib_subdir() -> str:
    """Where the cuda-runtime layer keeps its libraries on this OS (the loader's search dir)."""
    return "bin" if sys.platform == "win32" else "lib"

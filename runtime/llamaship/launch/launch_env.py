"""The variables a launch sets for its llama.cpp processes, and their values before it.

The launch names the overlay's backend module, its CUDA runtime folder and the Vulkan device
in this process's environment (`GGML_BACKEND_PATH`, `LD_LIBRARY_PATH` / `PATH`,
`GGML_VK_VISIBLE_DEVICES`), which every child inherits. A restart starts from the environment
before the launch (`before_launch`): a new process that chooses the CPU, or another overlay,
must not load the old module.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

# ggml loads the backend module this names (`ggml_backend_load_all_from_path`).
BACKEND_PATH = "GGML_BACKEND_PATH"

# Each variable the launch set, with its value before the first change (None: it was unset).
_before: dict[str, str | None] = {}


def set_for_launch(values: Mapping[str, str], environ: MutableMapping[str, str]) -> None:
    """Set `values` in `environ`, remembering what each variable held before the launch."""
    for key, value in values.items():
        _before.setdefault(key, environ.get(key))
        environ[key] = value


def before_launch(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` with every variable the launch set back to its value before the launch."""
    restored = dict(environ)
    for key, value in _before.items():
        if value is None:
            restored.pop(key, None)
        else:
            restored[key] = value
    return restored

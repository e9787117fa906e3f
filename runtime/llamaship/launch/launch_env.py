"""The variables a launch sets for its llama.cpp processes, and their values before it.

The launch names the overlay's backend module, its CUDA runtime folder and the Vulkan device
in this process's environment (`GGML_BACKEND_PATH`, `LD_LIBRARY_PATH` / `PATH`,
`GGML_VK_VISIBLE_DEVICES`), which every child inherits. What each variable held before the
launch travels with them (`LLAMASHIP_LAUNCH_SET`, JSON), so a restart starts from the
environment before the launch (`before_launch`): a new process that chooses the CPU, or
another overlay, must not load the old module.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, MutableMapping

from llamaship.config.options import LAUNCH_RECORD as RECORD

# ggml loads the backend module this names (`ggml_backend_load_all_from_path`).
BACKEND_PATH = "GGML_BACKEND_PATH"
# RECORD: {variable: its value before the launch, or null when it was unset}.


def _record(environ: Mapping[str, str]) -> dict[str, str | None]:
    try:
        data = json.loads(environ.get(RECORD, "{}"))
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(key): None if value is None else str(value) for key, value in data.items()}


def set_for_launch(values: Mapping[str, str], environ: MutableMapping[str, str]) -> None:
    """Set `values` in `environ`, recording what each variable held before the launch."""
    record = _record(environ)
    for key, value in values.items():
        record.setdefault(key, environ.get(key))
        environ[key] = value
    environ[RECORD] = json.dumps(record, sort_keys=True)


def before_launch(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` with every variable the launch set back to its value before the launch."""
    restored = dict(environ)
    for key, value in _record(environ).items():
        if value is None:
            restored.pop(key, None)
        else:
            restored[key] = value
    restored.pop(RECORD, None)
    return restored

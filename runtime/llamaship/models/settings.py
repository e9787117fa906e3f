"""The user's settings file, `LLAMASHIP_HOME/settings.json` (`UserSettings`).

It is the lowest configuration layer (defaults < settings.json < .env < environment <
command line): `option_values` turns it into the option values `llamaship.config` merges.
Written whole and atomically; a missing file means the defaults.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llamaship.errors import ConfigError
from llamaship.io.fs import atomic_write_bytes
from llamaship_contract.document import dump_document_pretty, parse_document
from llamaship_contract.errors import ContractError
from llamaship_contract.models import UserSettings

SETTINGS_NAME = "settings.json"
MODELS_DIR_NAME = "models"
_MAX_SIZE = 64 * 1024
_update_lock = threading.Lock()


def settings_path(home: Path) -> Path:
    return home / SETTINGS_NAME


def models_dir(home: Path) -> Path:
    """Where pulled models live: `LLAMASHIP_HOME/models`."""
    return home / MODELS_DIR_NAME


def read_user_settings(home: Path) -> UserSettings:
    """The saved settings (the defaults when there is no file); ConfigError when unreadable."""
    path = settings_path(home)
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_SIZE + 1)
    except FileNotFoundError:
        return UserSettings()
    except OSError as error:
        msg = f"cannot read the settings file {path}: {error.strerror or error}"
        raise ConfigError(msg) from None
    if len(data) > _MAX_SIZE:
        msg = f"the settings file {path} is larger than {_MAX_SIZE} bytes: delete it"
        raise ConfigError(msg)
    try:
        return parse_document(UserSettings, data, str(path))
    except ContractError as error:
        msg = f"{error}; fix the file or delete it (the defaults then apply)"
        raise ConfigError(msg) from None


def write_user_settings(home: Path, settings: UserSettings) -> None:
    """Replace the settings file atomically (readers see the old or the new file)."""
    atomic_write_bytes(settings_path(home), dump_document_pretty(settings))


def updated(settings: UserSettings, changes: Mapping[str, Any], origin: str) -> UserSettings:
    """`settings` with `changes` applied, validated whole (ConfigError naming each bad field)."""
    merged = {**settings.model_dump(mode="json", by_alias=True), **changes}
    try:
        return parse_document(UserSettings, merged, origin)
    except ContractError as error:
        raise ConfigError(str(error)) from None


def update_user_settings(
    home: Path, changes: Mapping[str, Any], origin: str
) -> tuple[UserSettings, UserSettings]:
    """Save the settings with `changes` applied (one writer at a time in this process); the
    settings before and after."""
    with _update_lock:
        before = read_user_settings(home)
        after = updated(before, changes, origin)
        write_user_settings(home, after)
    return before, after


def option_values(home: Path) -> dict[str, str]:
    """The configuration options the settings file sets (none when there is no file)."""
    if not settings_path(home).exists():
        return {}
    settings = read_user_settings(home)
    values = {"LLAMACPP_N_GPU_LAYERS": settings.n_gpu_layers()}
    if settings.model is not None:
        values["LLAMASHIP_MODEL"] = str(models_dir(home) / settings.model)
    return values

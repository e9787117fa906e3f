"""`/api/settings`: the user's settings file (`LLAMASHIP_HOME/settings.json`, `UserSettings`).

`GET` returns it; `POST` (admin) changes the fields it names and keeps the others. The model is
chosen with `POST /api/models/use`. Offload changes take effect at the next start.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from llamaship.errors import ConfigError
from llamaship.launch.outcome import BootState
from llamaship.models.settings import read_user_settings, settings_path, update_user_settings
from llamaship_backend.dependencies import get_boot_state
from llamaship_backend.errors import BackendError
from llamaship_backend.security import require_admin
from llamaship_contract.models import OffloadMode, UpgradeConsent, UserSettings

router = APIRouter()


class SettingsInvalid(BackendError):
    """The change would make the settings invalid (e.g. mixed mode without a layer count)."""

    code = "settings_invalid"


class SettingsChange(BaseModel):
    """`POST /api/settings`: only the fields sent are changed."""

    model_config = ConfigDict(extra="forbid", strict=True)

    offload_mode: OffloadMode = "auto"
    offload_layers: int | None = Field(default=None, ge=0)
    gpu_upgrade_consent: UpgradeConsent = "unset"


def _reply(state: BootState, settings: UserSettings, **extra: Any) -> dict[str, Any]:
    return {
        "settings": settings.model_dump(mode="json", by_alias=True),
        "path": str(settings_path(state.dirs.home)),
        **extra,
    }


@router.get("/api/settings")
def get_settings(state: Annotated[BootState, Depends(get_boot_state)]) -> dict[str, Any]:
    """The saved settings (the defaults when none were saved) and the file they live in."""
    return _reply(state, read_user_settings(state.dirs.home))


@router.post("/api/settings", dependencies=[Depends(require_admin)])
def change_settings(
    change: SettingsChange,
    state: Annotated[BootState, Depends(get_boot_state)],
) -> dict[str, Any]:
    """Save the fields sent; `restart_required`: the GPU offload changed (used from the next
    start)."""
    changes = change.model_dump(include=change.model_fields_set)
    try:
        before, after = update_user_settings(state.dirs.home, changes, "the settings change")
    except ConfigError as error:
        raise SettingsInvalid(str(error)) from None
    return _reply(state, after, restart_required=after.n_gpu_layers() != before.n_gpu_layers())

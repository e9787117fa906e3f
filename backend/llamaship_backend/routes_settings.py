"""`/api/settings`: the user's settings file (`LLAMASHIP_HOME/settings.json`, `UserSettings`).

`GET` returns it; `POST` (admin) changes the fields it names and keeps the others. The model is
chosen with `POST /api/models/use`. Offload changes take effect at the next start.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from llamaship.errors import ConfigError
from llamaship.launch.outcome import BootState
from llamaship.models.settings import read_user_settings, settings_path, update_user_settings
from llamaship_backend.dependencies import get_boot_state
from llamaship_backend.error_replies import ERROR_RESPONSES
from llamaship_backend.errors import BackendError
from llamaship_backend.schemas import SettingsChange, SettingsChangeReply, SettingsReply
from llamaship_backend.security import require_admin

router = APIRouter(responses=ERROR_RESPONSES)


class SettingsInvalid(BackendError):
    """The change would make the settings invalid (e.g. mixed mode without a layer count)."""

    code = "settings_invalid"


@router.get("/api/settings")
def get_settings(state: Annotated[BootState, Depends(get_boot_state)]) -> SettingsReply:
    """The saved settings (the defaults when none were saved) and the file they live in."""
    path = str(settings_path(state.dirs.home))
    return SettingsReply(settings=read_user_settings(state.dirs.home), path=path)


@router.post("/api/settings", dependencies=[Depends(require_admin)])
def change_settings(
    change: SettingsChange,
    state: Annotated[BootState, Depends(get_boot_state)],
) -> SettingsChangeReply:
    """Save the fields sent; `restart_required`: the GPU offload changed (used from the next
    start)."""
    changes = change.model_dump(include=change.model_fields_set)
    try:
        before, after = update_user_settings(state.dirs.home, changes, "the settings change")
    except ConfigError as error:
        raise SettingsInvalid(str(error)) from None
    return SettingsChangeReply(
        settings=after,
        path=str(settings_path(state.dirs.home)),
        restart_required=after.n_gpu_layers() != before.n_gpu_layers(),
    )

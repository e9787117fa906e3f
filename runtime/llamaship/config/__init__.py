"""llamaship's configuration: the settings table (`options`), its value parsers (`values`) and
the one resolver (`resolve`): defaults < settings.json < .env < environment < command line."""

from llamaship.config.options import OPTIONS, Option, Settings
from llamaship.config.resolve import (
    executable_dir,
    load_settings,
    read_env_file,
    render_env_example,
    resolve_settings,
)

__all__ = [
    "OPTIONS",
    "Option",
    "Settings",
    "executable_dir",
    "load_settings",
    "read_env_file",
    "render_env_example",
    "resolve_settings",
]

"""One configuration resolver: defaults < settings.json < .env < environment < command line.

`load_settings` puts the user's choices (`LLAMASHIP_HOME/settings.json`, written by the app and
`llamaship models use`) below the `.env`: defaults < settings.json < .env < environment < CLI.
"""

from __future__ import annotations

import difflib
import io
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llamaship.config.options import (
    BUILD_PREFIX,
    BY_KEY,
    ENV_FILE_NAME,
    ENV_FILE_VARIABLE,
    IGNORED_ENV,
    OPTIONS,
    OWN_PREFIXES,
    REMOVED,
    TYPO_CUTOFF,
    UNPREFIXED,
    Option,
    Settings,
)
from llamaship.config.values import parse_path
from llamaship.errors import ConfigError

_log = logging.getLogger(__name__)


def _unknown_key_error(key: str, origin: str) -> ConfigError:
    if key in REMOVED:
        return ConfigError(f"{key} in {origin} is not supported: {REMOVED[key]}.")
    close = difflib.get_close_matches(key, list(BY_KEY), n=1)
    hint = f" Did you mean {close[0]}?" if close else ""
    known = ", ".join(sorted(BY_KEY))
    return ConfigError(f"Unknown configuration key {key} in {origin}.{hint} Known keys: {known}.")


def _ours(key: str) -> bool:
    """An unknown key that is refused: a llamaship prefix (not the build's) or a likely typo
    of an unprefixed option (`AUTO_UPGRAD_GPU`)."""
    if key.startswith(OWN_PREFIXES):
        return not key.startswith(BUILD_PREFIX) and key not in IGNORED_ENV
    return _typo_of_unprefixed(key) is not None


def _typo_of_unprefixed(key: str) -> str | None:
    close = difflib.get_close_matches(key, UNPREFIXED, n=1, cutoff=TYPO_CUTOFF)
    return close[0] if close else None


def _warn_environment_typos(environ: Mapping[str, str]) -> None:
    """Warn (not refuse: other programs share the environment) about likely typos there."""
    for key in sorted(environ):
        if key in BY_KEY or key.startswith(OWN_PREFIXES):
            continue
        close = _typo_of_unprefixed(key)
        if close is not None:
            _log.warning(
                "%s in the environment is not a llamaship setting and is ignored: did you mean %s?",
                key,
                close,
            )


def read_env_file(path: Path) -> dict[str, str]:
    """The llamaship options a `.env` file sets; other programs' keys in it are skipped.

    Unknown keys with a llamaship prefix are refused; an unreadable, missing or non-UTF-8
    file is a `ConfigError` naming it.
    """
    from dotenv import dotenv_values  # lazy: only when a .env file is read

    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        msg = f"the .env file {path} does not exist; check the path or create it"
        raise ConfigError(msg) from None
    except OSError as error:
        msg = f"cannot read the .env file {path}: {error.strerror or error}"
        raise ConfigError(msg) from None
    except UnicodeDecodeError as error:
        msg = f"the .env file {path} is not UTF-8 text (byte {error.start}); save it as UTF-8"
        raise ConfigError(msg) from None
    values: dict[str, str] = {}
    for key, value in dotenv_values(stream=io.StringIO(text)).items():
        if key in BY_KEY:
            values[key] = value or ""
        elif _ours(key):
            raise _unknown_key_error(key, str(path))
    return values


def _raw_values(
    environ: Mapping[str, str], cli: Mapping[str, str | None], files: Sequence[Mapping[str, str]]
) -> dict[str, str]:
    """Merge .env files (in order) < environment < command line; refuse unknown keys."""
    raw: dict[str, str] = {}
    for values in files:
        raw.update(values)
    for key, value in environ.items():
        if key in BY_KEY:
            raw[key] = value
        elif key.startswith(OWN_PREFIXES) and _ours(key):
            raise _unknown_key_error(key, "the environment")
    for key, cli_value in cli.items():
        if key not in BY_KEY:
            raise _unknown_key_error(key, "the command line")
        if cli_value is not None:
            raw[key] = cli_value
    return raw


def _text_of(option: Option, raw: Mapping[str, str]) -> str:
    text = raw.get(option.key)
    if text is None or (not text.strip() and callable(option.default)):
        return option.default_text()
    return text


def _file_above(path: Path) -> Path | None:
    """The nearest existing ancestor of a missing `path` when it is not a directory."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def _path_problems(values: Mapping[str, Any]) -> list[str]:
    """Paths that are the wrong kind of file system object (checked without creating any)."""
    problems = []
    home: Path = values["home"]
    if home.exists() and not home.is_dir():
        problems.append(
            f"LLAMASHIP_HOME={str(home)!r} is a file, not a directory: point it at "
            "a directory (it is created when missing)."
        )
    elif (blocker := _file_above(home)) is not None:
        problems.append(
            f"LLAMASHIP_HOME={str(home)!r} is inside {str(blocker)!r}, which is a file, not a "
            "directory: point it at a directory (it is created when missing)."
        )
    port_file: Path | None = values["port_file"]
    if port_file is not None and port_file.is_dir():
        problems.append(
            f"LLAMASHIP_PORT_FILE={str(port_file)!r} is a directory: name a file in it instead."
        )
    elif port_file is not None and port_file.parent.exists() and not port_file.parent.is_dir():
        problems.append(
            f"LLAMASHIP_PORT_FILE={str(port_file)!r} is inside a file, not a "
            "directory: name a file in a directory."
        )
    return problems


def _settings_from(raw: Mapping[str, str]) -> Settings:
    problems: list[str] = []
    values: dict[str, Any] = {}
    for option in OPTIONS:
        text = _text_of(option, raw)
        try:
            values[option.field] = option.parse(text)
        except ValueError as accepted:
            problems.append(f"{option.key}={text!r} is invalid: expected {accepted}.")
    if not problems:
        problems = _path_problems(values)
    if problems:
        raise ConfigError(" ".join(problems))
    if "LLAMASHIP_RELEASE_URL" not in raw:  # not set anywhere: the one baked into the bundle
        from llamaship.bundled_release import bundled_release_url

        values["release_url"] = bundled_release_url()
    return Settings(**values)


def resolve_settings(
    env: Mapping[str, str] | None = None,
    cli: Mapping[str, str | None] | None = None,
    env_file: Path | None = None,
) -> Settings:
    """Merge defaults < env_file < env < cli (keys are option names) and validate every value.

    `env` defaults to `os.environ`; unknown `LLAMASHIP_*` keys in it are refused. `env_file`
    is read only when given, and then it must exist.
    """
    environ = os.environ if env is None else env
    _warn_environment_typos(environ)
    files = [read_env_file(env_file)] if env_file is not None else []
    return _settings_from(_raw_values(environ, cli or {}, files))


def executable_dir() -> Path | None:
    """The directory of a frozen bundle's executable (its `.env` is read), else None."""
    return Path(sys.executable).parent if getattr(sys, "frozen", False) else None


def _optional_env_file(path: Path) -> dict[str, str]:
    """A default location's `.env`: nothing when absent, an error when present but unreadable."""
    return read_env_file(path) if os.path.lexists(path) else {}


def load_settings(
    env_file: str | Path | None = None,
    cli: Mapping[str, str | None] | None = None,
    env: Mapping[str, str] | None = None,
    bundle_dir: Path | None = None,
) -> Settings:
    """The settings of a command: defaults < settings.json < `.env` < environment < command line.

    The `.env` is `env_file` (`--env-file`) or `$LLAMASHIP_ENV_FILE` when given (it must
    exist); otherwise the optional `.env` beside the bundle's executable (`bundle_dir`), then
    the optional `LLAMASHIP_HOME/.env`. The working directory is never searched.
    """
    environ = os.environ if env is None else env
    _warn_environment_typos(environ)
    cli = cli or {}
    explicit = env_file or environ.get(ENV_FILE_VARIABLE, "").strip() or None
    if explicit is not None:
        path = Path(explicit).expanduser()
        return _with_user_settings(environ, cli, [read_env_file(path)])
    files = [_optional_env_file(bundle_dir / ENV_FILE_NAME)] if bundle_dir is not None else []
    home_option = BY_KEY["LLAMASHIP_HOME"]
    try:
        home = parse_path(_text_of(home_option, _raw_values(environ, cli, files)))
    except ValueError:
        return _settings_from(_raw_values(environ, cli, files))  # reports the bad value
    home_file = home / ENV_FILE_NAME
    home_values = _optional_env_file(home_file) if home.is_dir() else {}
    if (
        home_values.get("LLAMASHIP_HOME", "").strip()
        and parse_path(home_values["LLAMASHIP_HOME"]) != home
    ):
        msg = (
            f"LLAMASHIP_HOME in {home_file} points elsewhere; a .env inside LLAMASHIP_HOME "
            "cannot move it: set LLAMASHIP_HOME in the environment instead"
        )
        raise ConfigError(msg)
    files.append(home_values)
    return _with_user_settings(environ, cli, files)


def _with_user_settings(
    environ: Mapping[str, str], cli: Mapping[str, str | None], files: Sequence[Mapping[str, str]]
) -> Settings:
    """Resolve with the home's settings.json as the lowest layer above the defaults."""
    from llamaship.models.settings import option_values  # lazy: the contract (pydantic)

    try:
        home = parse_path(_text_of(BY_KEY["LLAMASHIP_HOME"], _raw_values(environ, cli, files)))
    except ValueError:
        return _settings_from(_raw_values(environ, cli, files))  # reports the bad value
    user = option_values(home) if home.is_dir() else {}
    return _settings_from(_raw_values(environ, cli, [user, *files]))


def render_env_example() -> str:
    """The text of `.env.example`: every option, its default and its meaning."""
    lines = [
        "# llamaship configuration: defaults < LLAMASHIP_HOME/settings.json < .env < environment",
        "# < command line (settings.json holds the choices the settings page saves).",
        "# The .env is read from LLAMASHIP_HOME (and beside the bundle's executable), or",
        "# the file given with --env-file / LLAMASHIP_ENV_FILE; never the working directory.",
        "",
    ]
    for option in OPTIONS:
        default = "" if callable(option.default) else option.default
        lines.append(f"# {option.help}")
        if callable(option.default):
            lines.append(
                "# Default: the platform's user data dir (platformdirs), "
                "e.g. ~/.local/share/llamaship"
            )
        lines.append(f"{option.key}={default}")
        lines.append("")
    return "\n".join(lines)

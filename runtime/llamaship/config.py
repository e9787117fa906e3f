"""One configuration resolver: defaults < .env < environment < command line.

`load_settings` puts the user's choices (`LLAMASHIP_HOME/settings.json`, written by the app and
`llamaship models use`) below the `.env`: defaults < settings.json < .env < environment < CLI.
"""

from __future__ import annotations

import difflib
import io
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llamaship.errors import ConfigError

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("true/false (also 1/0, yes/no, on/off)")


def _parse_layers(value: str) -> int | None:
    lowered = value.strip().lower()
    if lowered == "auto":
        return None
    try:
        layers = int(lowered)
    except ValueError:
        raise ValueError("'auto', -1 (all layers) or a whole number >= 0") from None
    if layers < -1:
        raise ValueError("'auto', -1 (all layers) or a whole number >= 0")
    return layers


def _parse_threads(value: str) -> int | None:
    lowered = value.strip().lower()
    if lowered == "auto":
        return None
    try:
        threads = int(lowered)
    except ValueError:
        raise ValueError("'auto' or a whole number >= 1") from None
    if threads < 1:
        raise ValueError("'auto' or a whole number >= 1")
    return threads


def _parse_timeout(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError("a number of seconds > 0, e.g. 5 or 2.5") from None
    if not 0 < seconds <= 600:
        raise ValueError("a number of seconds > 0 and <= 600, e.g. 5 or 2.5")
    return seconds


def _parse_port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise ValueError("a TCP port number from 0 to 65535") from None
    if not 0 <= port <= 65535:
        raise ValueError("a TCP port number from 0 to 65535")
    return port


def _parse_positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError("a whole number >= 1") from None
    if number < 1:
        raise ValueError("a whole number >= 1")
    return number


def _parse_megabytes(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError("a whole number of MiB >= 0, e.g. 1024") from None
    if number < 0:
        raise ValueError("a whole number of MiB >= 0, e.g. 1024")
    return number


def _parse_path(value: str) -> Path:
    if not value.strip():
        raise ValueError("a non-empty file system path")
    return Path(value).expanduser()


def _parse_optional_path(value: str) -> Path | None:
    return Path(value).expanduser() if value.strip() else None


def _parse_optional_text(value: str) -> str | None:
    return value.strip() or None


def _parse_text(value: str) -> str:
    if not value.strip():
        raise ValueError("a non-empty value")
    return value.strip()


def _parse_restart_mode(value: str) -> str:
    lowered = value.strip().lower()
    if lowered not in {"exec", "exit"}:
        raise ValueError("'exec' (the backend re-executes itself) or 'exit' (exit code 75)")
    return lowered


def _default_home() -> str:
    import platformdirs  # imported lazily: only needed when LLAMASHIP_HOME is unset

    return platformdirs.user_data_dir("llamaship", appauthor=False)


@dataclass(frozen=True)
class Option:
    """One configuration key: its parser, default and the line `.env.example` shows."""

    key: str
    field: str
    parse: Callable[[str], Any]
    default: str | Callable[[], str]
    help: str

    def default_text(self) -> str:
        return self.default() if callable(self.default) else self.default


OPTIONS: tuple[Option, ...] = (
    Option(
        "LLAMASHIP_HOME",
        "home",
        _parse_path,
        _default_home,
        "Root of all llamaship data and caches (overlays, detection cache, state).",
    ),
    Option(
        "LLAMASHIP_MODEL",
        "model",
        _parse_optional_path,
        "",
        "Path to the GGUF model file the backend serves (empty: none configured).",
    ),
    Option("LLAMASHIP_HOST", "host", _parse_text, "127.0.0.1", "Address the backend listens on."),
    Option(
        "LLAMASHIP_PORT",
        "port",
        _parse_port,
        "8765",
        "TCP port the backend listens on (0 picks a free port).",
    ),
    Option(
        "LLAMASHIP_N_CTX",
        "n_ctx",
        _parse_positive_int,
        "2048",
        "Context length in tokens for the loaded model.",
    ),
    Option(
        "LLAMASHIP_RELEASE_URL",
        "release_url",
        _parse_optional_text,
        "",
        "URL (or file path) of the signed releases.json index the GPU overlay comes from "
        "(unset: the one the bundle was built with; empty: none).",
    ),
    Option(
        "LLAMASHIP_RELEASE_CHECK",
        "release_check",
        _parse_bool,
        "true",
        "Check the release index for a GPU overlay at launch, at most once a day (true/false).",
    ),
    Option(
        "LLAMASHIP_HUB_URL",
        "hub_url",
        _parse_text,
        "https://huggingface.co",
        "The Hugging Face hub (or a mirror) models are pulled from and their sha256 asked of.",
    ),
    Option(
        "LLAMASHIP_HUB_ALLOW_HTTP",
        "hub_allow_http",
        _parse_bool,
        "false",
        "Accept a plain http:// LLAMASHIP_HUB_URL (a local test hub only; true/false).",
    ),
    Option(
        "AUTO_UPGRADE_GPU",
        "auto_upgrade_gpu",
        _parse_bool,
        "false",
        "Download and install the CUDA overlay at launch without asking (true/false).",
    ),
    Option(
        "LLAMACPP_N_GPU_LAYERS",
        "n_gpu_layers",
        _parse_layers,
        "auto",
        "Layers to offload to the GPU: auto, -1 (all) or a number >= 0.",
    ),
    Option(
        "LLAMASHIP_VRAM_MARGIN_MB",
        "vram_margin_mb",
        _parse_megabytes,
        "1024",
        "MiB the GPU fit leaves free on each GPU (for the desktop and other programs).",
    ),
    Option(
        "LLAMACPP_N_THREADS",
        "n_threads",
        _parse_threads,
        "auto",
        "CPU threads for generation: auto or a number >= 1.",
    ),
    Option(
        "LLAMACPP_VERBOSE",
        "verbose",
        _parse_bool,
        "false",
        "Let llama.cpp log to stderr (true/false).",
    ),
    Option(
        "GPU_DETECTION_CACHE",
        "detection_cache",
        _parse_bool,
        "true",
        "Cache the GPU detection report between launches (true/false).",
    ),
    Option(
        "GPU_DETECTION_TIMEOUT",
        "detection_timeout",
        _parse_timeout,
        "5",
        "Seconds nvidia-smi may take before it is killed and the launch goes on.",
    ),
    Option(
        "LLAMASHIP_RESTART",
        "restart",
        _parse_restart_mode,
        "exec",
        "How /api/admin/restart restarts: exec (re-run itself) or exit (code 75, "
        "for a supervisor such as Electron to relaunch).",
    ),
    Option(
        "LLAMASHIP_PORT_FILE",
        "port_file",
        _parse_optional_path,
        "",
        "File the backend writes its bound port to once listening (empty: none).",
    ),
)


_BY_KEY = {option.key: option for option in OPTIONS}
ENV_FILE_NAME = ".env"
ENV_FILE_VARIABLE = "LLAMASHIP_ENV_FILE"
# Unknown keys with these prefixes are refused (typos); any other key is another program's.
_OWN_PREFIXES = ("LLAMASHIP_", "LLAMACPP_", "GPU_DETECTION_")
# Environment variables with the LLAMASHIP_ prefix that are not options (read elsewhere):
# the explicit .env path, the release signing key (build side), and the build side's
# checkout, cache and overlay source.
_IGNORED_ENV = frozenset(
    {
        ENV_FILE_VARIABLE,
        "LLAMASHIP_SIGNING_KEY",
        "LLAMASHIP_ROOT",
        "LLAMASHIP_BUILD_CACHE",
        "LLAMASHIP_OVERLAY_SOURCE",
        "LLAMASHIP_RELEASE_INDEX_URL",
    }
)
# Keys that used to exist; naming them gets a reason instead of a spelling hint.
_REMOVED = {
    "LLAMASHIP_TRUSTED_KEYS": "release signing keys come only from the application bundle "
    "(trusted_keys.json, fixed when it is built); remove the line",
}


@dataclass(frozen=True)
class Settings:
    """The resolved configuration; build it with `load_settings` or `resolve_settings`."""

    home: Path
    model: Path | None
    host: str
    port: int
    n_ctx: int
    release_url: str | None
    auto_upgrade_gpu: bool
    n_gpu_layers: int | None
    n_threads: int | None
    verbose: bool
    detection_cache: bool
    detection_timeout: float
    restart: str
    port_file: Path | None
    vram_margin_mb: int = 1024
    release_check: bool = True
    hub_url: str = "https://huggingface.co"
    hub_allow_http: bool = False


def _unknown_key_error(key: str, origin: str) -> ConfigError:
    if key in _REMOVED:
        return ConfigError(f"{key} in {origin} is not supported: {_REMOVED[key]}.")
    close = difflib.get_close_matches(key, list(_BY_KEY), n=1)
    hint = f" Did you mean {close[0]}?" if close else ""
    known = ", ".join(sorted(_BY_KEY))
    return ConfigError(f"Unknown configuration key {key} in {origin}.{hint} Known keys: {known}.")


def _ours(key: str) -> bool:
    return key.startswith(_OWN_PREFIXES) and key not in _IGNORED_ENV


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
        if key in _BY_KEY:
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
        if key in _BY_KEY:
            raw[key] = value
        elif _ours(key):
            raise _unknown_key_error(key, "the environment")
    for key, cli_value in cli.items():
        if key not in _BY_KEY:
            raise _unknown_key_error(key, "the command line")
        if cli_value is not None:
            raw[key] = cli_value
    return raw


def _text_of(option: Option, raw: Mapping[str, str]) -> str:
    text = raw.get(option.key)
    if text is None or (not text.strip() and callable(option.default)):
        return option.default_text()
    return text


def _path_problems(values: Mapping[str, Any]) -> list[str]:
    """Paths that are the wrong kind of file system object (checked without creating any)."""
    problems = []
    home: Path = values["home"]
    if home.exists() and not home.is_dir():
        problems.append(
            f"LLAMASHIP_HOME={str(home)!r} is a file, not a directory: point it at "
            "a directory (it is created when missing)."
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
    """The settings of a command: defaults < `.env` < environment < command line.

    The `.env` is `env_file` (`--env-file`) or `$LLAMASHIP_ENV_FILE` when given (it must
    exist); otherwise the optional `.env` beside the bundle's executable (`bundle_dir`), then
    the optional `LLAMASHIP_HOME/.env`. The working directory is never searched.
    """
    environ = os.environ if env is None else env
    cli = cli or {}
    explicit = env_file or environ.get(ENV_FILE_VARIABLE, "").strip() or None
    if explicit is not None:
        path = Path(explicit).expanduser()
        return _with_user_settings(environ, cli, [read_env_file(path)])
    files = [_optional_env_file(bundle_dir / ENV_FILE_NAME)] if bundle_dir is not None else []
    home_option = _BY_KEY["LLAMASHIP_HOME"]
    try:
        home = _parse_path(_text_of(home_option, _raw_values(environ, cli, files)))
    except ValueError:
        return _settings_from(_raw_values(environ, cli, files))  # reports the bad value
    home_file = home / ENV_FILE_NAME
    home_values = _optional_env_file(home_file) if home.is_dir() else {}
    if (
        home_values.get("LLAMASHIP_HOME", "").strip()
        and _parse_path(home_values["LLAMASHIP_HOME"]) != home
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
        home = _parse_path(_text_of(_BY_KEY["LLAMASHIP_HOME"], _raw_values(environ, cli, files)))
    except ValueError:
        return _settings_from(_raw_values(environ, cli, files))  # reports the bad value
    user = option_values(home) if home.is_dir() else {}
    return _settings_from(_raw_values(environ, cli, [user, *files]))


def render_env_example() -> str:
    """The text of `.env.example`: every option, its default and its meaning."""
    lines = [
        "# llamaship configuration: defaults < .env < environment < command line.",
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

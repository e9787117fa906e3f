"""One configuration resolver: defaults < .env < environment < command line."""

from __future__ import annotations

import base64
import binascii
import difflib
import os
from collections.abc import Callable, Mapping
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


def _parse_public_keys(value: str) -> tuple[str, ...]:
    keys = tuple(part.strip() for part in value.split(",") if part.strip())
    for key in keys:
        try:
            raw = base64.b64decode(key, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise ValueError("comma-separated base64 ed25519 public keys (32 bytes each), "
                             "as `llamaship keys generate` prints them")
    return keys


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
    Option("LLAMASHIP_HOME", "home", _parse_path, _default_home,
           "Root of all llamaship data and caches (overlays, detection cache, state)."),
    Option("LLAMASHIP_MODEL", "model", _parse_optional_path, "",
           "Path to the GGUF model file the backend serves (empty: none configured)."),
    Option("LLAMASHIP_HOST", "host", _parse_text, "127.0.0.1",
           "Address the backend listens on."),
    Option("LLAMASHIP_PORT", "port", _parse_port, "8765",
           "TCP port the backend listens on (0 picks a free port)."),
    Option("LLAMASHIP_N_CTX", "n_ctx", _parse_positive_int, "2048",
           "Context length in tokens for the loaded model."),
    Option("LLAMASHIP_RELEASE_URL", "release_url", _parse_optional_text, "",
           "URL (or file path) of the signed releases.json index the GPU overlay comes from."),
    Option("AUTO_UPGRADE_GPU", "auto_upgrade_gpu", _parse_bool, "false",
           "Download and install the CUDA overlay at launch without asking (true/false)."),
    Option("LLAMACPP_N_GPU_LAYERS", "n_gpu_layers", _parse_layers, "auto",
           "Layers to offload to the GPU: auto, -1 (all) or a number >= 0."),
    Option("LLAMACPP_N_THREADS", "n_threads", _parse_threads, "auto",
           "CPU threads for generation: auto or a number >= 1."),
    Option("LLAMACPP_VERBOSE", "verbose", _parse_bool, "false",
           "Let llama.cpp log to stderr (true/false)."),
    Option("GPU_DETECTION_CACHE", "detection_cache", _parse_bool, "true",
           "Cache the GPU detection report between launches (true/false)."),
    Option("GPU_DETECTION_TIMEOUT", "detection_timeout", _parse_timeout, "5",
           "Seconds nvidia-smi may take before it is killed and the launch goes on."),
    Option("LLAMASHIP_RESTART", "restart", _parse_restart_mode, "exec",
           "How /api/admin/restart restarts: exec (re-run itself) or exit (code 75, "
           "for a supervisor such as Electron to relaunch)."),
    Option("LLAMASHIP_PORT_FILE", "port_file", _parse_optional_path, "",
           "File the backend writes its bound port to once listening (empty: none)."),
    Option("LLAMASHIP_TRUSTED_KEYS", "trusted_keys", _parse_public_keys, "",
           "Extra base64 ed25519 public keys (comma-separated) trusted to sign overlays, "
           "besides the bundled release keys: for tests and self-hosted releases."),
)

_BY_KEY = {option.key: option for option in OPTIONS}
# Environment variables with the LLAMASHIP_ prefix that are not options (read elsewhere):
# the .env path, the release signing key (build side),
# the build side's checkout, cache and overlay source, and the installer's test hooks.
_IGNORED_ENV = frozenset({
    "LLAMASHIP_ENV_FILE", "LLAMASHIP_SIGNING_KEY", "LLAMASHIP_ROOT",
    "LLAMASHIP_BUILD_CACHE", "LLAMASHIP_OVERLAY_SOURCE", "LLAMASHIP_TEST_PAUSE_AT",
})


@dataclass(frozen=True)
class Settings:
    """The resolved configuration; build it with `resolve_settings`."""

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
    trusted_keys: tuple[str, ...]


def _unknown_key_error(key: str, origin: str) -> ConfigError:
    close = difflib.get_close_matches(key, list(_BY_KEY), n=1)
    hint = f" Did you mean {close[0]}?" if close else ""
    known = ", ".join(sorted(_BY_KEY))
    return ConfigError(f"Unknown configuration key {key} in {origin}.{hint} Known keys: {known}.")


def read_env_file(path: Path) -> dict[str, str]:
    """Read a `.env` file; every key in it must be a llamaship option."""
    from dotenv import dotenv_values  # lazy: only when a .env file exists

    values: dict[str, str] = {}
    for key, value in dotenv_values(path).items():
        if key not in _BY_KEY:
            raise _unknown_key_error(key, str(path))
        values[key] = value or ""
    return values


def resolve_settings(
    env: Mapping[str, str] | None = None,
    cli: Mapping[str, str | None] | None = None,
    env_file: Path | None = None,
) -> Settings:
    """Merge defaults < env_file < env < cli (keys are option names) and validate every value.

    `env` defaults to `os.environ`; unknown `LLAMASHIP_*` keys in it are refused.
    """
    environ = os.environ if env is None else env
    raw: dict[str, str] = {}
    if env_file is not None and env_file.is_file():
        raw.update(read_env_file(env_file))
    for key, value in environ.items():
        if key in _BY_KEY:
            raw[key] = value
        elif key.startswith("LLAMASHIP_") and key not in _IGNORED_ENV:
            raise _unknown_key_error(key, "the environment")
    for key, value in (cli or {}).items():
        if key not in _BY_KEY:
            raise _unknown_key_error(key, "the command line")
        if value is not None:
            raw[key] = value

    problems: list[str] = []
    values: dict[str, Any] = {}
    for option in OPTIONS:
        text = raw.get(option.key)
        if text is None or (not text.strip() and callable(option.default)):
            text = option.default_text()
        try:
            values[option.field] = option.parse(text)
        except ValueError as accepted:
            problems.append(f"{option.key}={text!r} is invalid: expected {accepted}.")
    if problems:
        raise ConfigError(" ".join(problems))
    return Settings(**values)


def default_env_file(env: Mapping[str, str] | None = None) -> Path:
    """The `.env` file to read: `LLAMASHIP_ENV_FILE` if set, else `.env` in the working dir."""
    environ = os.environ if env is None else env
    return Path(environ.get("LLAMASHIP_ENV_FILE", ".env"))


def render_env_example() -> str:
    """The text of `.env.example`: every option, its default and its meaning."""
    lines = ["# llamaship configuration: defaults < .env < environment < command line.", ""]
    for option in OPTIONS:
        default = "" if callable(option.default) else option.default
        lines.append(f"# {option.help}")
        if callable(option.default):
            lines.append("# Default: the platform's user data dir (platformdirs), e.g. ~/.local/share/llamaship")
        lines.append(f"{option.key}={default}")
        lines.append("")
    return "\n".join(lines)


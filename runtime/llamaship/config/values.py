"""Parsers of configuration values: text in, typed value out, `ValueError` naming what is
accepted (the resolver turns it into a `ConfigError` naming the key)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

VariantChoice = Literal["measured", "gpu", "cpu"]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("true/false (also 1/0, yes/no, on/off)")


def parse_layers(value: str) -> int | None:
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


def parse_threads(value: str) -> int | None:
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


def parse_timeout(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError("a number of seconds > 0, e.g. 5 or 2.5") from None
    if not 0 < seconds <= 600:
        raise ValueError("a number of seconds > 0 and <= 600, e.g. 5 or 2.5")
    return seconds


def parse_port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise ValueError("a TCP port number from 0 to 65535") from None
    if not 0 <= port <= 65535:
        raise ValueError("a TCP port number from 0 to 65535")
    return port


def parse_positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError("a whole number >= 1") from None
    if number < 1:
        raise ValueError("a whole number >= 1")
    return number


def parse_megabytes(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError("a whole number of MiB >= 0, e.g. 1024") from None
    if number < 0:
        raise ValueError("a whole number of MiB >= 0, e.g. 1024")
    return number


def parse_path(value: str) -> Path:
    if not value.strip():
        raise ValueError("a non-empty file system path")
    return Path(value).expanduser()


def parse_optional_path(value: str) -> Path | None:
    return Path(value).expanduser() if value.strip() else None


def parse_optional_text(value: str) -> str | None:
    return value.strip() or None


def parse_text(value: str) -> str:
    if not value.strip():
        raise ValueError("a non-empty value")
    return value.strip()


def parse_restart_mode(value: str) -> str:
    lowered = value.strip().lower()
    if lowered not in {"exec", "exit"}:
        raise ValueError("'exec' (the backend re-executes itself) or 'exit' (exit code 75)")
    return lowered


def parse_vulkan_device(value: str) -> str:
    text = value.strip()
    return text.lower() if text.lower() in {"auto", "none"} else (text or "auto")


def parse_variant_choice(value: str) -> str:
    lowered = value.strip().lower()
    if lowered not in {"measured", "gpu", "cpu"}:
        raise ValueError("'measured' (the GPU build only if it measured faster), 'gpu' or 'cpu'")
    return lowered

"""The settings table: every configuration key, its parser, default and meaning, and the
`Settings` it resolves to. The resolver (`llamaship.config.resolve`) reads this table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llamaship.config.values import (
    VariantChoice,
    parse_bool,
    parse_layers,
    parse_megabytes,
    parse_optional_path,
    parse_optional_text,
    parse_path,
    parse_port,
    parse_positive_int,
    parse_restart_mode,
    parse_text,
    parse_threads,
    parse_timeout,
    parse_variant_choice,
    parse_vulkan_device,
)


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
        parse_path,
        _default_home,
        "Root of all llamaship data and caches (overlays, detection cache, state).",
    ),
    Option(
        "LLAMASHIP_MODEL",
        "model",
        parse_optional_path,
        "",
        "Path to the GGUF model file the backend serves (empty: none configured).",
    ),
    Option("LLAMASHIP_HOST", "host", parse_text, "127.0.0.1", "Address the backend listens on."),
    Option(
        "LLAMASHIP_PORT",
        "port",
        parse_port,
        "8765",
        "TCP port the backend listens on (0 picks a free port).",
    ),
    Option(
        "LLAMASHIP_N_CTX",
        "n_ctx",
        parse_positive_int,
        "2048",
        "Context length in tokens for the loaded model.",
    ),
    Option(
        "LLAMASHIP_RELEASE_URL",
        "release_url",
        parse_optional_text,
        "",
        "URL (or file path) of the signed releases.json index the GPU overlay comes from "
        "(unset: the one the bundle was built with; empty: none).",
    ),
    Option(
        "LLAMASHIP_RELEASE_CHECK",
        "release_check",
        parse_bool,
        "true",
        "Check the release index for a GPU overlay at launch, at most once a day (true/false).",
    ),
    Option(
        "LLAMASHIP_HUB_URL",
        "hub_url",
        parse_text,
        "https://huggingface.co",
        "The Hugging Face hub (or a mirror) models are pulled from and their sha256 asked of.",
    ),
    Option(
        "LLAMASHIP_HUB_ALLOW_HTTP",
        "hub_allow_http",
        parse_bool,
        "false",
        "Accept a plain http:// LLAMASHIP_HUB_URL (a local test hub only; true/false).",
    ),
    Option(
        "AUTO_UPGRADE_GPU",
        "auto_upgrade_gpu",
        parse_bool,
        "false",
        "Download and install the CUDA overlay at launch without asking (true/false).",
    ),
    Option(
        "LLAMACPP_N_GPU_LAYERS",
        "n_gpu_layers",
        parse_layers,
        "auto",
        "Layers to offload to the GPU: auto, -1 (all) or a number >= 0.",
    ),
    Option(
        "LLAMASHIP_VRAM_MARGIN_MB",
        "vram_margin_mb",
        parse_megabytes,
        "1024",
        "MiB the GPU fit leaves free on each GPU (for the desktop and other programs).",
    ),
    Option(
        "LLAMASHIP_VULKAN_DEVICE",
        "vulkan_device",
        parse_vulkan_device,
        "auto",
        "Vulkan device for llama.cpp: auto (a discrete GPU, else an integrated one; never a "
        "software renderer), none, its index or (part of) its name, as `detect` lists them.",
    ),
    Option(
        "LLAMASHIP_VARIANT_CHOICE",
        "variant_choice",
        parse_variant_choice,
        "measured",
        "GPU or CPU build: measured (the GPU build only if it measured faster), gpu or cpu.",
    ),
    Option(
        "LLAMACPP_N_THREADS",
        "n_threads",
        parse_threads,
        "auto",
        "CPU threads for generation: auto or a number >= 1.",
    ),
    Option(
        "LLAMACPP_VERBOSE",
        "verbose",
        parse_bool,
        "false",
        "Let llama.cpp log to stderr (true/false).",
    ),
    Option(
        "GPU_DETECTION_CACHE",
        "detection_cache",
        parse_bool,
        "true",
        "Cache the GPU detection report between launches (true/false).",
    ),
    Option(
        "GPU_DETECTION_TIMEOUT",
        "detection_timeout",
        parse_timeout,
        "5",
        "Seconds nvidia-smi (and the Vulkan device query) may take before it is killed and "
        "the launch goes on.",
    ),
    Option(
        "LLAMASHIP_RESTART",
        "restart",
        parse_restart_mode,
        "exec",
        "How /api/admin/restart restarts: exec (re-run itself) or exit (code 75, "
        "for a supervisor such as Electron to relaunch).",
    ),
    Option(
        "LLAMASHIP_PORT_FILE",
        "port_file",
        parse_optional_path,
        "",
        "File the backend writes its bound port to once listening (empty: none).",
    ),
)


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
    vulkan_device: str = "auto"
    release_check: bool = True
    hub_url: str = "https://huggingface.co"
    hub_allow_http: bool = False
    variant_choice: VariantChoice = "measured"


BY_KEY = {option.key: option for option in OPTIONS}
ENV_FILE_NAME = ".env"
ENV_FILE_VARIABLE = "LLAMASHIP_ENV_FILE"
# Unknown keys with these prefixes are refused (typos); any other key is another program's.
OWN_PREFIXES = ("LLAMASHIP_", "LLAMACPP_", "GPU_DETECTION_")
# The build's own variables (`python -m llamaship_build`, nox, CI): never a runtime setting.
BUILD_PREFIX = "LLAMASHIP_BUILD_"
# What a launch set in the environment for its llama.cpp processes, and the values before it
# (`llamaship.launch.launch_env`): every child of the launch inherits it.
LAUNCH_RECORD = "LLAMASHIP_LAUNCH_SET"
# Other LLAMASHIP_ variables that are not options (read elsewhere): the explicit .env path,
# the launch's record, and the release signing keys (the build's CI secrets, never a setting
# of the runtime).
IGNORED_ENV = frozenset(
    {ENV_FILE_VARIABLE, LAUNCH_RECORD, "LLAMASHIP_SIGNING_KEY", "LLAMASHIP_INDEX_KEY"}
)
# Options without one of `OWN_PREFIXES`: a close misspelling of one is refused too (in `.env`
# files; warned about in the environment, which other programs share).
UNPREFIXED = tuple(option.key for option in OPTIONS if not option.key.startswith(OWN_PREFIXES))
TYPO_CUTOFF = 0.9
# Keys that used to exist; naming them gets a reason instead of a spelling hint.
REMOVED = {
    "LLAMASHIP_TRUSTED_KEYS": "release signing keys come only from the application bundle "
    "(trusted_keys.json, fixed when it is built); remove the line",
}

"""The model file check `serve` and `fit` share: both refuse the same files, the same way."""

from __future__ import annotations

from pathlib import Path

from llamaship.errors import ConfigError

SETTING = "LLAMASHIP_MODEL (or --model)"


def check_model(model: Path) -> None:
    """Refuse a model file that is missing, not GGUF, truncated or states absurd sizes.

    Reads the metadata and tensor table only (bounded, `llamaship.fit.gguf_meta`); raises a
    `ConfigError` (exit status 2) naming the file and what to do."""
    from llamaship.fit.errors import FitError
    from llamaship.fit.gguf_meta import GGUF_MAGIC, read_meta

    try:
        with model.open("rb") as handle:
            magic = handle.read(len(GGUF_MAGIC))
    except FileNotFoundError:
        msg = (
            f"The model file {model} does not exist: pass --model PATH.gguf or set "
            "LLAMASHIP_MODEL (or leave both empty for `serve`)."
        )
        raise ConfigError(msg) from None
    except OSError as error:
        msg = (
            f"{SETTING} {str(model)!r} cannot be read ({error.strerror or error}): "
            "point it at a .gguf model file, or leave it empty"
        )
        raise ConfigError(msg) from None
    if magic != GGUF_MAGIC:
        msg = (
            f"{SETTING} {str(model)!r} is not a GGUF model file (it does not start "
            "with 'GGUF'): download the model in GGUF format, or leave it empty"
        )
        raise ConfigError(msg)
    try:
        read_meta(model)
    except FitError as error:
        msg = (
            f"{SETTING} {str(model)!r} is not a usable GGUF model file ({error}): "
            "download it again (`llamaship models pull`), or choose another"
        )
        raise ConfigError(msg) from None

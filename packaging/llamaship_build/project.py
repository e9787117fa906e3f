"""Paths and metadata of the llamaship checkout being built."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from llamaship_contract.names import TRUSTED_KEYS_NAME

TRUSTED_KEYS_FILE = f"runtime/llamaship/{TRUSTED_KEYS_NAME}"
"""The release public keys every bundle trusts (baked in by the spec), from the checkout root."""


@dataclass(frozen=True)
class Project:
    """A llamaship checkout: where its inputs are and where outputs go."""

    root: Path

    @classmethod
    def here(cls) -> Project:
        """The checkout this module was imported from (or LLAMASHIP_BUILD_ROOT)."""
        from llamaship_build.settings import BuildSettings

        configured = BuildSettings.resolve(os.environ).root
        return cls(configured or Path(__file__).resolve().parents[2])

    @property
    def requirements(self) -> Path:
        return self.root / "requirements"

    @property
    def trusted_keys_file(self) -> Path:
        return self.root / TRUSTED_KEYS_FILE

    @property
    def templates(self) -> Path:
        return self.root / "templates"

    @property
    def dist(self) -> Path:
        return self.root / "dist"

    @property
    def build_dir(self) -> Path:
        return self.root / "build"

    @property
    def docs(self) -> Path:
        return self.root / "docs"

    def version(self) -> str:
        with open(self.root / "pyproject.toml", "rb") as file:
            return str(tomllib.load(file)["project"]["version"])


def cache_dir() -> Path:
    """Cache shared by every checkout on this machine (wheelhouse, build venvs)."""
    from llamaship_build.settings import BuildSettings

    configured = BuildSettings.resolve(os.environ).build_cache
    if configured is not None:
        return configured
    import platformdirs

    return Path(platformdirs.user_cache_dir("llamaship-build", appauthor=False))

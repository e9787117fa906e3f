"""The build side's settings, resolved in one place: defaults < environment.

Like the runtime's `llamaship.config`, `env` is passed in (tests pass a dict) and every value
is checked at once. The signing key is not here: only the signing step reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from llamaship_build.errors import BuildError

TOOLCHAINS = ("debian11", "host")
OVERLAY_SOURCES = ("auto", "wheel-index", "build", "wheel")


@dataclass(frozen=True)
class BuildSettings:
    """What the build may be told through the environment."""

    linux_toolchain: str = "debian11"
    """`debian11`: Linux builds run in a Debian 11 root (glibc 2.31); `host`: on this machine."""
    glibc_floor: str = "2.31"
    """The newest glibc a Linux bundle may need; the build fails above it."""
    overlay_source: str | None = None
    """Where the CUDA build comes from when `--source` is not given."""
    build_cache: Path | None = None
    """Where compiled wheels, build venvs and the Debian root are kept."""

    @classmethod
    def resolve(cls, env: Mapping[str, str]) -> BuildSettings:
        """Settings from `env` (`LLAMASHIP_LINUX_TOOLCHAIN`, `LLAMASHIP_GLIBC_FLOOR`,
        `LLAMASHIP_OVERLAY_SOURCE`, `LLAMASHIP_BUILD_CACHE`); all problems reported at once."""
        problems: list[str] = []
        toolchain = env.get("LLAMASHIP_LINUX_TOOLCHAIN", cls.linux_toolchain).strip().lower()
        if toolchain not in TOOLCHAINS:
            problems.append(
                f"LLAMASHIP_LINUX_TOOLCHAIN={toolchain!r} is invalid: expected "
                f"{' or '.join(TOOLCHAINS)}"
            )
        floor = env.get("LLAMASHIP_GLIBC_FLOOR", cls.glibc_floor).strip()
        parts = floor.split(".")
        if len(parts) < 2 or not all(part.isdigit() for part in parts):
            problems.append(
                f"LLAMASHIP_GLIBC_FLOOR={floor!r} is invalid: expected a version such as 2.31"
            )
        source = env.get("LLAMASHIP_OVERLAY_SOURCE", "").strip() or None
        if source is not None and source not in OVERLAY_SOURCES:
            problems.append(
                f"LLAMASHIP_OVERLAY_SOURCE={source!r} is invalid: expected one of "
                f"{', '.join(OVERLAY_SOURCES)}"
            )
        cache = env.get("LLAMASHIP_BUILD_CACHE", "").strip()
        if problems:
            raise BuildError("; ".join(problems))
        return cls(
            linux_toolchain=toolchain,
            glibc_floor=floor,
            overlay_source=source,
            build_cache=Path(cache).expanduser() if cache else None,
        )

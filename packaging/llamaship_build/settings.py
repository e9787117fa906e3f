"""The build side's settings, resolved in one place: defaults < environment.

Like the runtime's `llamaship.config`, `env` is passed in (tests pass a dict) and every value
is checked at once. The signing key is not here: only the signing step reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from llamaship_build.errors import BuildError
from llamaship_build.release_location import setting_problem

TOOLCHAINS = ("debian11", "host")
# Every variable the build reads (here, and the signing key in the signing step only); the
# runtime's own settings are other LLAMASHIP_* names.
VARIABLES = (
    "LLAMASHIP_BUILD_LINUX_TOOLCHAIN",
    "LLAMASHIP_BUILD_GLIBC_FLOOR",
    "LLAMASHIP_BUILD_GLIBCXX_FLOOR",
    "LLAMASHIP_BUILD_OVERLAY_SOURCE",
    "LLAMASHIP_BUILD_CACHE",
    "LLAMASHIP_BUILD_ROOT",
    "LLAMASHIP_BUILD_DEBIAN_MIRROR",
    "LLAMASHIP_BUILD_DEBIAN_SECURITY_MIRROR",
    "LLAMASHIP_BUILD_DEBIAN_ROOT_TARBALL",
    "LLAMASHIP_BUILD_DEBIAN_ROOT_SHA256",
    "LLAMASHIP_BUILD_RELEASE_INDEX_URL",
    "LLAMASHIP_SIGNING_KEY",
)
# The source of the CUDA module when no --source is given (`wheel` needs a path: --source).
OVERLAY_SOURCES = ("build",)
DEBIAN_MIRROR = "http://deb.debian.org/debian"
_HEX = frozenset("0123456789abcdef")


def _version_problem(key: str, text: str, example: str) -> str | None:
    parts = text.split(".")
    if len(parts) >= 2 and all(part.isdigit() for part in parts):
        return None
    return f"{key}={text!r} is invalid: expected a version such as {example}"


def _url_problem(key: str, text: str) -> str | None:
    spaced = any(char.isspace() for char in text)  # it is written into the root's sources.list
    if text.startswith(("http://", "https://")) and len(text) > len("https://") and not spaced:
        return None
    return f"{key}={text!r} is invalid: expected an http:// or https:// URL such as {DEBIAN_MIRROR}"


def _tarball_problems(tarball: str | None, sha256: str | None) -> list[str | None]:
    if sha256 is not None and (len(sha256) != 64 or not set(sha256) <= _HEX):
        return [f"LLAMASHIP_BUILD_DEBIAN_ROOT_SHA256={sha256!r} is invalid: expected 64 hex digits"]
    if tarball is not None and "://" in tarball:
        if not tarball.startswith("https://"):
            return [
                f"LLAMASHIP_BUILD_DEBIAN_ROOT_TARBALL={tarball!r} is invalid: expected a file path "
                "or an https:// URL"
            ]
        if sha256 is None:
            return [
                "LLAMASHIP_BUILD_DEBIAN_ROOT_TARBALL is a URL: also set "
                "LLAMASHIP_BUILD_DEBIAN_ROOT_SHA256 to the tarball's sha256 (the one you "
                "recorded when it was exported)"
            ]
    return []


@dataclass(frozen=True)
class BuildSettings:
    """What the build may be told through the environment."""

    linux_toolchain: str = "debian11"
    """`debian11`: Linux builds run in a Debian 11 root (glibc 2.31); `host`: on this machine."""
    glibc_floor: str = "2.31"
    """The newest glibc a Linux bundle may need; the build fails above it."""
    glibcxx_floor: str = "3.4.28"
    """The newest libstdc++ (`GLIBCXX_`) a Linux bundle may need: GCC 10's, as in Debian 11."""
    overlay_source: str | None = None
    """Where the CUDA build comes from when `--source` is not given."""
    build_cache: Path | None = None
    """Where compiled wheels, build venvs and the Debian root are kept."""
    root: Path | None = None
    """The checkout to build (default: the one `llamaship_build` was imported from)."""
    debian_mirror: str = DEBIAN_MIRROR
    """The Debian archive the Debian 11 root is made from (e.g. http://archive.debian.org/debian
    once bullseye leaves the mirrors)."""
    debian_security_mirror: str = DEBIAN_MIRROR + "-security"
    """Its security archive: `debian_mirror` + `-security` unless set."""
    debian_root_tarball: str | None = None
    """A root tarball (`root-export`'s output: a path or an https URL) to unpack instead of
    running debootstrap."""
    debian_root_sha256: str | None = None
    """The tarball's sha256 (required for a URL; for a path, else the `.sha256` file beside it)."""
    release_index_url: str | None = None
    """The release index a release bundle looks for GPU overlays in: an https URL, `pages`
    (this repository's GitHub Pages index) or None (`release_location`)."""

    @classmethod
    def resolve(cls, env: Mapping[str, str]) -> BuildSettings:
        """Settings from `env` (the `LLAMASHIP_BUILD_*` names in `VARIABLES`); all problems are
        reported at once."""
        problems: list[str | None] = []
        toolchain = env.get("LLAMASHIP_BUILD_LINUX_TOOLCHAIN", cls.linux_toolchain).strip().lower()
        if toolchain not in TOOLCHAINS:
            problems.append(
                f"LLAMASHIP_BUILD_LINUX_TOOLCHAIN={toolchain!r} is invalid: expected "
                f"{' or '.join(TOOLCHAINS)}"
            )
        glibc = env.get("LLAMASHIP_BUILD_GLIBC_FLOOR", cls.glibc_floor).strip()
        glibcxx = env.get("LLAMASHIP_BUILD_GLIBCXX_FLOOR", cls.glibcxx_floor).strip()
        problems.append(_version_problem("LLAMASHIP_BUILD_GLIBC_FLOOR", glibc, cls.glibc_floor))
        problems.append(
            _version_problem("LLAMASHIP_BUILD_GLIBCXX_FLOOR", glibcxx, cls.glibcxx_floor)
        )
        source = env.get("LLAMASHIP_BUILD_OVERLAY_SOURCE", "").strip() or None
        if source is not None and source not in OVERLAY_SOURCES:
            problems.append(
                f"LLAMASHIP_BUILD_OVERLAY_SOURCE={source!r} is invalid: expected one of "
                f"{', '.join(OVERLAY_SOURCES)}"
            )
        cache = env.get("LLAMASHIP_BUILD_CACHE", "").strip()
        root = env.get("LLAMASHIP_BUILD_ROOT")
        mirror = (
            env.get("LLAMASHIP_BUILD_DEBIAN_MIRROR", "").strip().rstrip("/") or cls.debian_mirror
        )
        security = (
            env.get("LLAMASHIP_BUILD_DEBIAN_SECURITY_MIRROR", "").strip().rstrip("/")
            or mirror + "-security"
        )
        problems.append(_url_problem("LLAMASHIP_BUILD_DEBIAN_MIRROR", mirror))
        problems.append(_url_problem("LLAMASHIP_BUILD_DEBIAN_SECURITY_MIRROR", security))
        tarball = env.get("LLAMASHIP_BUILD_DEBIAN_ROOT_TARBALL", "").strip() or None
        sha256 = env.get("LLAMASHIP_BUILD_DEBIAN_ROOT_SHA256", "").strip().lower() or None
        problems.extend(_tarball_problems(tarball, sha256))
        release_index = env.get("LLAMASHIP_BUILD_RELEASE_INDEX_URL", "").strip()
        problems.append(setting_problem(release_index))
        found = [problem for problem in problems if problem is not None]
        if found:
            raise BuildError("; ".join(found))
        return cls(
            linux_toolchain=toolchain,
            glibc_floor=glibc,
            glibcxx_floor=glibcxx,
            overlay_source=source,
            build_cache=Path(cache).expanduser() if cache else None,
            root=Path(root).resolve() if root is not None else None,
            debian_mirror=mirror,
            debian_security_mirror=security,
            debian_root_tarball=tarball,
            debian_root_sha256=sha256,
            release_index_url=release_index or None,
        )

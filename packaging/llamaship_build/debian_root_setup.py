"""What this machine needs before the Debian 11 root can be made, and getting it.

The README's first command does the set-up: as root on a Debian-like system (apt-get), the
missing tools are installed after a log line saying so, with apt's output shown, as `.ci/run`
does. Without root no root can be made or entered (debootstrap, chroot, mounts): the refusal
says in one line how to build instead and which glibc that build then needs.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from llamaship_build.errors import BuildError
from llamaship_build.toolchain import HOST

_log = logging.getLogger(__name__)

KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
# What making the root needs on this machine: the tool, and Debian's keys it checks against.
TOOLS = ("debootstrap", "debian-archive-keyring")


@dataclass(frozen=True)
class HostFacts:
    """What the set-up decision depends on."""

    is_root: bool
    has_apt_get: bool
    has_debootstrap: bool
    has_keyring: bool
    glibc: str
    """This machine's glibc version, e.g. `2.36` (empty where unknown)."""

    @classmethod
    def of_this_machine(cls) -> HostFacts:
        libc = os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else None
        return cls(
            is_root=hasattr(os, "geteuid") and os.geteuid() == 0,
            has_apt_get=shutil.which("apt-get") is not None,
            has_debootstrap=shutil.which("debootstrap") is not None,
            has_keyring=KEYRING.is_file(),
            glibc=(libc or "").rpartition(" ")[2],
        )


@dataclass(frozen=True)
class SetupPlan:
    """The packages to install with apt-get (maybe none), or why the root cannot be made."""

    install: tuple[str, ...] = ()
    refusal: str | None = None


def _host_build(glibc: str) -> str:
    mine = f"this machine's glibc {glibc}" if glibc else "this machine's glibc"
    floor = glibc or "its version"
    return (
        f"or build against {mine} with LLAMASHIP_BUILD_LINUX_TOOLCHAIN=host "
        f"LLAMASHIP_BUILD_GLIBC_FLOOR={floor} and LLAMASHIP_BUILD_GLIBCXX_FLOOR raised to its "
        "libstdc++ "
        f"(the bundle then needs glibc >= {floor}; docs/platforms.md)"
    )


def plan_setup(facts: HostFacts, *, from_tarball: bool) -> SetupPlan:
    """What to do before making the root: `from_tarball` needs no debootstrap, only root."""
    if not facts.is_root:
        return SetupPlan(
            refusal=(
                "the Linux build runs in a Debian 11 root (glibc 2.31) and needs root for "
                "debootstrap, chroot and its mounts: run it as root (sudo scripts/nox -s dist), "
                + _host_build(facts.glibc)
            )
        )
    if from_tarball:
        return SetupPlan()
    missing = tuple(
        tool
        for tool, present in zip(TOOLS, (facts.has_debootstrap, facts.has_keyring), strict=True)
        if not present
    )
    if not missing or facts.has_apt_get:
        return SetupPlan(install=missing)
    return SetupPlan(
        refusal=(
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing and this "
            "system has no apt-get: install them with its package manager, set "
            "LLAMASHIP_BUILD_DEBIAN_ROOT_TARBALL to an exported root (docs/platforms.md), "
            + _host_build(facts.glibc)
        )
    )


Runner = Callable[..., None]


def carry_out(plan: SetupPlan, run: Runner = HOST.run) -> None:
    """Install what `plan` names with apt-get, saying so first; raise its refusal.

    `run(command, what=..., env=...)` runs a command with its output shown (`HOST.run`).
    """
    if plan.refusal is not None:
        raise BuildError(plan.refusal)
    if not plan.install:
        return
    names = " ".join(plan.install)
    _log.info(
        "%s missing: installing with apt-get (the Linux build makes its Debian 11 root with it)",
        names,
    )
    env: Mapping[str, str] = {"DEBIAN_FRONTEND": "noninteractive"}
    commands: Sequence[list[str]] = (
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", *plan.install],
    )
    for command in commands:
        run(command, what=f"{' '.join(command[:2])} ({names})", env=env)

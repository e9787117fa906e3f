"""Publish a release with the GitHub CLI: a draft first, every asset uploaded, then public.

Users (and the runtime's index URL) never see a release with some assets missing: the release
stays a draft until the last upload succeeded. Run by the release workflow's publish job (its
GITHUB_TOKEN); locally it needs `gh auth login` and the tag pushed.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from llamaship_build.errors import BuildError


def publish_commands(tag: str, assets: Sequence[Path], notes: str) -> list[list[str]]:
    """The gh commands, in order: create the draft, upload every asset, publish."""
    if not assets:
        msg = f"no release assets for {tag}: build them first"
        raise BuildError(msg)
    files = [str(path) for path in sorted(assets, key=lambda path: path.name)]
    return [
        [
            "gh",
            "release",
            "create",
            tag,
            "--draft",
            "--verify-tag",
            "--title",
            tag,
            "--notes",
            notes,
        ],
        ["gh", "release", "upload", tag, *files],
        ["gh", "release", "edit", tag, "--draft=false", "--latest"],
    ]


def publish(tag: str, directory: Path, notes: str) -> None:
    """Publish every file in `directory` as the release `tag` (see `publish_commands`)."""
    assets = sorted(path for path in directory.iterdir() if path.is_file())
    for command in publish_commands(tag, assets, notes):
        if subprocess.run(command, check=False).returncode != 0:
            msg = (
                f"`{' '.join(command[:3])}` failed for {tag}; the release stays a draft: "
                "fix the cause, delete the draft (`gh release delete`), and run again"
            )
            raise BuildError(msg)

"""Publish a release with the GitHub CLI: a draft first, every asset uploaded, then public.

Users (and the runtime's index URL) never see a release with some assets missing: the release
stays a draft until the last upload succeeded. A pre-release tag (`v1.2.0rc1`, `v1.2.0-beta`)
is published as a pre-release and never marked latest. Run by the release workflow's publish
job (its GITHUB_TOKEN) as `python -m llamaship_build.publish TAG DIR`: it imports only the
standard library and the contract's errors, so that job installs nothing but uses `gh`.
Locally it needs `gh auth login` and the tag pushed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from llamaship_build.errors import BuildError
from llamaship_build.release_tag import is_prerelease


def publish_commands(tag: str, assets: Sequence[Path], notes: str) -> list[list[str]]:
    """The gh commands, in order: create the draft, upload every asset, publish.

    A pre-release tag is created as a pre-release and published with `--latest=false`.
    """
    if not assets:
        msg = f"no release assets for {tag}: build them first"
        raise BuildError(msg)
    files = [str(path) for path in sorted(assets, key=lambda path: path.name)]
    prerelease = is_prerelease(tag)
    create = ["gh", "release", "create", tag, "--draft", "--verify-tag", "--title", tag]
    return [
        [*create, *(["--prerelease"] if prerelease else []), "--notes", notes],
        ["gh", "release", "upload", tag, *files],
        [
            "gh",
            "release",
            "edit",
            tag,
            "--draft=false",
            "--latest=false" if prerelease else "--latest",
        ],
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llamaship_build.publish")
    parser.add_argument("tag")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--notes", default="", help="release notes")
    args = parser.parse_args(argv)
    try:
        publish(args.tag, args.directory, notes=args.notes)
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A release tag is `v` + the project's version; a pre-release is never marked latest.

`python -m llamaship_build.release_tag TAG` is the release workflow's first check. It imports
only the standard library and the contract's errors, so it runs on the runner's own Python
with the checkout on PYTHONPATH, before any environment is installed.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence

from llamaship_build.errors import BuildError
from llamaship_build.project import Project

# A final release: numbers, optionally a post-release. Anything else (`1.2.0rc1`, `1.2.0b2`,
# `1.2.0.dev3`, `1.2.0-rc.1`, `1.2.0-beta`) is a pre-release.
_FINAL = re.compile(r"\d+(?:\.\d+)*(?:\.post\d+)?")


class TagMismatch(BuildError):
    """The pushed tag does not name the version being released."""


def is_prerelease(tag_or_version: str) -> bool:
    """Whether a version (or its `v` tag) is a pre-release: `-rc`, `-beta`, `rc1`, `.dev`..."""
    return _FINAL.fullmatch(tag_or_version.removeprefix("v")) is None


def check_tag(tag: str, version: str) -> None:
    """Raise unless `tag` is exactly `v<version>`."""
    if tag != f"v{version}":
        msg = (
            f"the tag {tag} does not match the project version {version} in pyproject.toml: "
            f"tag the commit as v{version}, or set that version in pyproject.toml, commit "
            "and tag the new commit"
        )
        raise TagMismatch(msg)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m llamaship_build.release_tag TAG", file=sys.stderr)
        return 2
    (tag,) = args
    try:
        check_tag(tag, Project.here().version())
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    kind = "a pre-release (not marked latest)" if is_prerelease(tag) else "a release"
    print(f"{tag} matches pyproject.toml: {kind}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Where the bundle looks for GPU overlays: the release index URL baked into it as
`llamaship/release.json`, beside `trusted_keys.json`.

The build setting `LLAMASHIP_BUILD_RELEASE_INDEX_URL` chooses it: an `https://` URL, `pages`
(the stable GitHub Pages location `https://<owner>.github.io/<repo>/releases.json`, owner and
repository read from a GitHub URL in pyproject's `[project.urls]`; none when it has none), or
empty (none). Release builds (`nox -s release_bundle`) default to `pages`; local and test
bundles bake in none. The runtime's `LLAMASHIP_RELEASE_URL` still overrides it.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from llamaship_build.errors import BuildError

RELEASE_FILE = "release.json"
PAGES = "pages"
_GITHUB = re.compile(r"https://github\.com/([A-Za-z0-9-]+)/([A-Za-z0-9._-]+?)(?:\.git)?/?")


def pages_url(pyproject: Path) -> str | None:
    """`https://<owner>.github.io/<repo>/releases.json` for the first GitHub repository URL in
    `[project.urls]`, or None when there is none."""
    try:
        with pyproject.open("rb") as handle:
            urls = tomllib.load(handle).get("project", {}).get("urls", {})
    except (OSError, tomllib.TOMLDecodeError) as error:
        msg = f"cannot read [project.urls] from {pyproject}: {error}"
        raise BuildError(msg) from None
    for url in urls.values() if isinstance(urls, dict) else ():
        match = _GITHUB.fullmatch(str(url))
        if match:
            return f"https://{match[1].lower()}.github.io/{match[2]}/releases.json"
    return None


def release_index_url(setting: str | None, pyproject: Path) -> str | None:
    """The URL to bake in for the build setting's value (None: bake in none)."""
    if setting is None or setting == "":
        return None
    if setting == PAGES:
        return pages_url(pyproject)
    return setting


def setting_problem(text: str) -> str | None:
    """Why `LLAMASHIP_BUILD_RELEASE_INDEX_URL=text` is invalid, or None."""
    if text in ("", PAGES) or (
        text.startswith("https://")
        and len(text) > len("https://")
        and text.isprintable()
        and not any(char.isspace() for char in text)
    ):
        return None
    return (
        f"LLAMASHIP_BUILD_RELEASE_INDEX_URL={text!r} is invalid: expected an https:// URL of "
        f"a releases.json, '{PAGES}' (the GitHub Pages location of this repository) or empty"
    )

"""The release index URL baked into the bundle: `llamaship/release.json`, written by the build
as it writes `trusted_keys.json` (`{"release_url": "https://.../releases.json"}` or null).

It is where the GPU overlays come from when `LLAMASHIP_RELEASE_URL` is not set (the setting,
even empty, wins). A checkout, and a local or test bundle, have none.
"""

from __future__ import annotations

import json
from importlib import resources

from llamaship.errors import ConfigError

RELEASE_FILE = "release.json"
_MAX_SIZE = 4096


def bundled_release_url(package: str = "llamaship") -> str | None:
    """The release index URL in `package`'s `release.json`; None when there is none."""
    resource = resources.files(package).joinpath(RELEASE_FILE)
    try:
        with resource.open("rb") as handle:
            data = handle.read(_MAX_SIZE + 1)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as error:
        msg = f"cannot read the bundled {RELEASE_FILE} ({error}); reinstall the application"
        raise ConfigError(msg) from None
    try:
        document = json.loads(data) if len(data) <= _MAX_SIZE else None
    except ValueError:
        document = None
    if isinstance(document, dict) and set(document) == {"release_url"}:
        url = document["release_url"]
        if url is None or (isinstance(url, str) and url.startswith("https://")):
            return url
    msg = (
        f'the bundled {RELEASE_FILE} is not {{"release_url": "https://..." or null}}; '
        "reinstall the application"
    )
    raise ConfigError(msg)

"""The publisher's sha256 and size of a model file, asked of the Hugging Face hub before a pull.

A HEAD on the hub's resolve endpoint (`<hub>/<owner>/<repo>/resolve/<revision>/<file>`), its
redirect to the CDN not followed, answers an LFS file's sha256 in `X-Linked-Etag` (quoted) and
its size in `X-Linked-Size`: the values `huggingface_hub`'s `get_hf_file_metadata` reads. A
redirect within the hub (a renamed repository: a relative `Location`) is followed. The hub is
`https://huggingface.co` unless a `Hub` names another base URL (a mirror; a loopback server in
tests, where plain http must be allowed explicitly).
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llamaship.errors import ConfigError
from llamaship.io.fetch import Fetcher
from llamaship.io.http_session import status_text
from llamaship.io.transfer import DownloadError
from llamaship_contract.models import HUB_FILE_URL, HUB_ORIGIN
from llamaship_contract.textsafe import printable

if TYPE_CHECKING:
    import httpx

__all__ = ["HUB_ORIGIN", "Hub", "HubHashMissing", "PublishedFile", "published_file"]

# A renamed repository redirects within the hub; more hops than this is a loop.
MAX_HUB_REDIRECTS = 5
_SHA256 = re.compile(r"[0-9a-f]{64}")
_DIGITS = re.compile(r"[0-9]{1,20}")


class HubHashMissing(DownloadError):
    """The hub published no sha256 or size for the file: it cannot be verified."""


@dataclass(frozen=True)
class PublishedFile:
    """What the hub publishes for one file."""

    sha256: str
    size: int


@dataclass(frozen=True)
class Hub:
    """Where the hub is: `base_url` replaces `https://huggingface.co` in catalogue URLs.

    `allow_http` accepts a plain http base URL (a loopback server in tests): never for the real
    hub, whose answers vouch for the files.
    """

    base_url: str = HUB_ORIGIN
    allow_http: bool = False

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.base_url)
        schemes = ("https", "http") if self.allow_http else ("https",)
        if parts.scheme not in schemes or not parts.netloc or parts.query or parts.fragment:
            allowed = " or ".join(f"{scheme}://" for scheme in schemes)
            msg = (
                f"LLAMASHIP_HUB_URL={printable(self.base_url)!r} is invalid: expected an "
                f"{allowed} URL without query or fragment, e.g. {HUB_ORIGIN}"
            )
            raise ConfigError(msg)

    def locate(self, url: str) -> str | None:
        """`url` at this hub when it names a file on the hub (its resolve endpoint), else None."""
        if not HUB_FILE_URL.fullmatch(url):
            return None
        return self.base_url.rstrip("/") + url[len(HUB_ORIGIN) :]


def published_file(fetcher: Fetcher, url: str, what: str) -> PublishedFile:
    """The sha256 and size the hub publishes for the file at `url` (its resolve URL).

    Raises `HubHashMissing` when the answer carries neither, `DownloadError` when the hub
    cannot be reached or refuses."""
    shown = printable(url)
    current = url
    for _ in range(MAX_HUB_REDIRECTS + 1):
        response = fetcher.head(current, what=what)
        location = response.headers.get("location", "")
        if response.is_redirect and location.startswith("/") and not location.startswith("//"):
            current = urllib.parse.urljoin(current, location)  # within the hub: follow
            continue
        if response.status_code != 200 and not response.is_redirect:
            msg = (
                f"the hub answered {status_text(response)} for the {what} ({shown}): check "
                "that the model still exists there, or that the network can reach the hub"
            )
            raise DownloadError(msg)
        return _published(response.headers, shown, what)
    msg = f"the hub redirected the {what} ({shown}) more than {MAX_HUB_REDIRECTS} times: refused"
    raise DownloadError(msg)


def _published(headers: httpx.Headers, shown: str, what: str) -> PublishedFile:
    etag = headers.get("x-linked-etag", "").strip().removeprefix("W/").strip('"').lower()
    size = headers.get("x-linked-size", "").strip()
    if _SHA256.fullmatch(etag) and _DIGITS.fullmatch(size) and int(size) > 0:
        return PublishedFile(etag, int(size))
    msg = (
        f"the hub publishes no sha256 and size for the {what} ({shown}: X-Linked-Etag "
        f"'{printable(etag, 80)}', X-Linked-Size '{printable(size, 40)}'), so its download "
        "cannot be verified: pull it with --sha256 HASH from the model's publisher, or with "
        "--accept-unverified to take whatever arrives"
    )
    raise HubHashMissing(msg)

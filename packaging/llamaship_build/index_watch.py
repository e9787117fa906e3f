"""Fail while the live release index expires soon: a failed or disabled re-sign shows early.

`python -m llamaship_build.index_watch URL [--min-days N] [--require] [--wait-for FILE]`:
ci.yml runs it on every push and pull request, and the re-sign and release workflows after
publishing. It reads only the index's `serial` and `expires` (no signature check: it raises
an alarm, it decides nothing) and imports only the standard library and the contract's
errors, so it runs on the runner's own Python.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from llamaship_build.errors import BuildError
from llamaship_contract.names import ExitStatus

MAX_BYTES = 4 * 1024 * 1024
TIMEOUT_S = 30
DEFAULT_MIN_DAYS = 10
# How long Pages may take to serve a new commit of gh-pages.
WAIT_S = 600
POLL_S = 15


class IndexExpiresSoon(BuildError):
    """The live index expires within the margin: the re-sign has not run."""

    exit_code = ExitStatus.INDEX_EXPIRED


@dataclass(frozen=True)
class Freshness:
    """What the alarm reads from an index."""

    serial: int
    expires: datetime


def freshness(data: bytes, origin: str) -> Freshness:
    """The serial and expiry of an index document."""
    try:
        document = json.loads(data)
        expires = datetime.fromisoformat(str(document["expires"]).replace("Z", "+00:00"))
        serial = int(document["serial"])
    except (ValueError, KeyError, TypeError) as error:
        msg = f"{origin} is not a release index with a serial and an expiry ({error})"
        raise BuildError(msg) from None
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    return Freshness(serial, expires)


def check_margin(live: Freshness, now: datetime, min_days: int, url: str) -> timedelta:
    """The time left; raises when it is less than `min_days`."""
    left = live.expires - now
    if left < timedelta(days=min_days):
        msg = (
            f"the live index {url} (serial {live.serial}) expires {live.expires:%Y-%m-%d %H:%M} "
            f"UTC, in less than {min_days} days: the scheduled re-sign has not run. Run it "
            "(gh workflow run resign-index.yml), enable it if GitHub disabled it, and read "
            "its log (docs/releasing.md, the re-sign)"
        )
        raise IndexExpiresSoon(msg)
    return left


def fetch(url: str) -> bytes | None:
    """The index's bytes, or None when nothing is published there (HTTP 404)."""
    request = urllib.request.Request(url, headers={"Cache-Control": "no-cache"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as reply:
            data = bytes(reply.read(MAX_BYTES + 1))
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        msg = f"cannot read the live index {url}: HTTP {error.code}"
        raise BuildError(msg) from None
    except OSError as error:
        msg = f"cannot read the live index {url}: {error}"
        raise BuildError(msg) from None
    if len(data) > MAX_BYTES:
        msg = f"the live index {url} is larger than {MAX_BYTES} bytes"
        raise BuildError(msg)
    return data


def wait_for_serial(url: str, serial: int) -> Freshness:
    """Poll `url` until it serves `serial` or higher (Pages deploys a commit in minutes)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        data = fetch(url)
        if data is not None:
            live = freshness(data, url)
            if live.serial >= serial:
                return live
        if time.monotonic() > deadline:
            msg = (
                f"{url} does not serve serial {serial} after {WAIT_S} s: check the Pages "
                "settings (source: the gh-pages branch) and the pages-build-deployment run"
            )
            raise BuildError(msg)
        time.sleep(POLL_S)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llamaship_build.index_watch")
    parser.add_argument("url", help="the live releases.json")
    parser.add_argument("--min-days", type=int, default=DEFAULT_MIN_DAYS)
    parser.add_argument("--require", action="store_true", help="fail when nothing is published")
    parser.add_argument(
        "--wait-for", type=Path, help="a just-published releases.json: wait until it is live"
    )
    args = parser.parse_args(argv)
    try:
        if args.wait_for is not None:
            expected = freshness(args.wait_for.read_bytes(), str(args.wait_for))
            live = wait_for_serial(args.url, expected.serial)
        else:
            data = fetch(args.url)
            if data is None:
                if args.require:
                    msg = f"nothing is published at {args.url}: see docs/releasing.md, Pages"
                    raise BuildError(msg)
                print(f"no live index at {args.url} yet (nothing released): nothing to check")
                return 0
            live = freshness(data, args.url)
        left = check_margin(live, datetime.now(UTC), args.min_days, args.url)
    except (BuildError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code if isinstance(error, BuildError) else ExitStatus.ERROR
    print(f"the live index (serial {live.serial}) expires in {left.days} days")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

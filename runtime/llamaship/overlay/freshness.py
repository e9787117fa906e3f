"""The release index expires (TUF's freeze attack): a copy past its `expires` is refused.

A mirror or network attacker that keeps serving an old, validly signed index could otherwise
hide newer releases (security fixes) forever. The release job re-signs the live index well
before it expires (`python -m llamaship_build resign-index`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from llamaship_contract.errors import LlamashipError
from llamaship_contract.names import ExitStatus
from llamaship_contract.release_index import ReleaseIndex

_STAMP = "%Y-%m-%dT%H:%M:%SZ"


class IndexExpired(LlamashipError):
    """The release index is past its expiry: an outdated copy was served."""

    exit_code = ExitStatus.INDEX_EXPIRED


def ensure_unexpired(index: ReleaseIndex, origin: str, now: datetime | None = None) -> None:
    """Raise `IndexExpired` when `index` (from `origin`) is past its `expires` at `now`."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    if moment < index.expires_at:
        return
    msg = (
        f"the release index at {origin} expired on {index.expires_at.strftime(_STAMP)} "
        f"(it is now {moment.strftime(_STAMP)}): an outdated copy was served (a stale "
        "mirror, a cache or an attacker holding back newer releases), or this computer's "
        "clock is wrong; check the clock and try again later"
    )
    raise IndexExpired(msg)

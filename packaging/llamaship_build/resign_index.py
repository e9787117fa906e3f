"""`python -m llamaship_build resign-index SOURCE`: re-sign the live `releases.json` before it
expires (TUF's freeze attack): the same release list, a higher serial, a new expiry.

The scheduled job runs it with the index key ($LLAMASHIP_INDEX_KEY), which the bundle trusts
for freshness only. SOURCE must carry a valid signature from a key the bundle trusts, and the
release list it pins must carry the release key's: the job never vouches for what it cannot
verify, and its key must be one of the bundle's index keys.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from datetime import UTC, datetime, timedelta
from pathlib import Path

from llamaship_build.errors import BuildError
from llamaship_build.project import TRUSTED_KEYS_FILE
from llamaship_build.release_index import index_over, write_signed
from llamaship_contract.names import INDEX_NAME, SIGNATURE_SUFFIX
from llamaship_contract.overlay_fields import ManifestError
from llamaship_contract.release_index import dump_index, parse_index
from llamaship_contract.signing import (
    INDEX_KEY_ENV,
    SignatureError,
    key_id,
    load_signing_key,
    public_key_of,
    verify,
)
from llamaship_contract.trust import TrustedKeys

MAX_INDEX_BYTES = 4 * 1024 * 1024


def _read(source: str) -> bytes:
    """The bytes of a URL (http/https) or a local path, capped at MAX_INDEX_BYTES."""
    if source.startswith(("http://", "https://")):
        import httpx

        try:
            with httpx.stream("GET", source, follow_redirects=True, timeout=60) as reply:
                reply.raise_for_status()
                data = b""
                for chunk in reply.iter_bytes():
                    data += chunk
                    if len(data) > MAX_INDEX_BYTES:
                        msg = f"{source} is larger than {MAX_INDEX_BYTES} bytes"
                        raise BuildError(msg)
                return data
        except httpx.HTTPError as error:
            msg = f"cannot download {source}: {error}"
            raise BuildError(msg) from None
    try:
        with Path(source).open("rb") as handle:
            data = handle.read(MAX_INDEX_BYTES + 1)
    except OSError as error:
        msg = f"cannot read {source}: {error.strerror or error}"
        raise BuildError(msg) from None
    if len(data) > MAX_INDEX_BYTES:
        msg = f"{source} is larger than {MAX_INDEX_BYTES} bytes"
        raise BuildError(msg)
    return data


def _beside(source: str, name: str) -> str:
    """The location of `name` in the same directory as `source` (a URL or a path)."""
    if source.startswith(("http://", "https://")):
        return posixpath.join(posixpath.dirname(source), name)
    return str(Path(source).with_name(name))


def _verified(source: str, keys: tuple[str, ...]) -> bytes:
    data = _read(source)
    try:
        verify(data, _read(source + SIGNATURE_SUFFIX), keys)
    except SignatureError as error:
        msg = f"refusing to re-sign: {source}: {error}"
        raise BuildError(msg) from None
    return data


def resign_index(
    source: str,
    out_dir: Path,
    trusted: TrustedKeys,
    *,
    key_file: Path | None,
    lifetime: timedelta,
    serial: int | None = None,
    now: datetime | None = None,
) -> list[Path]:
    """Verify the index at `source` and the list it pins, renew the index, write it signed.

    `serial` defaults to the epoch seconds of `now`, and at least the live serial + 1.
    """
    private = load_signing_key(key_file, os.environ, INDEX_KEY_ENV)
    signer = public_key_of(private)
    if signer not in trusted.index:
        msg = (
            f"the signing key {key_id(signer)} is not an index key in {TRUSTED_KEYS_FILE}: "
            "no released bundle would accept the re-signed index; set "
            f"${INDEX_KEY_ENV} to the index key (docs/releasing.md)"
        )
        raise BuildError(msg)
    try:
        index = parse_index(_verified(source, trusted.for_index), origin=source)
    except ManifestError as error:
        msg = f"refusing to re-sign {source}: {error}"
        raise BuildError(msg) from None
    pinned = index.overlays
    list_location = _beside(source, pinned.name)
    list_bytes = _verified(list_location, trusted.release)
    if (len(list_bytes), hashlib.sha256(list_bytes).hexdigest()) != (pinned.size, pinned.sha256):
        msg = (
            f"refusing to re-sign {source}: {list_location} is not the release list it pins "
            "(size or sha256 differs); publish the release's overlays.json again"
        )
        raise BuildError(msg)
    moment = now or datetime.now(UTC)
    if serial is None:
        serial = max(index.serial + 1, int(moment.timestamp()))
    if serial <= index.serial:
        msg = f"the new serial {serial} must be greater than the live index's {index.serial}"
        raise BuildError(msg)
    new = index_over(pinned.name, list_bytes, serial, pinned.serial, moment, lifetime)
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_signed(out_dir / INDEX_NAME, dump_index(new), private)

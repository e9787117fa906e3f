"""`python -m llamaship_build resign-index SOURCE`: re-sign the live release index before it
expires (TUF's freeze attack): the same releases, a higher serial, a new expiry.

The scheduled release job runs it. SOURCE (the published `releases.json`, a URL or a path)
must carry a valid signature from a key the bundle trusts, and the signing key must be one of
those keys too: the job never signs what it cannot verify, nor with a key no bundle accepts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from llamaship_build.errors import BuildError
from llamaship_build.project import TRUSTED_KEYS_FILE
from llamaship_contract.names import INDEX_NAME, SIGNATURE_SUFFIX
from llamaship_contract.overlay import ManifestError, ReleaseIndex, dump_index, parse_index
from llamaship_contract.signing import (
    SignatureError,
    key_id,
    load_signing_key,
    public_key_of,
    sign,
    verify,
)

MAX_INDEX_BYTES = 4 * 1024 * 1024
_STAMP = "%Y-%m-%dT%H:%M:%SZ"


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


def renewed(index: ReleaseIndex, serial: int, now: datetime, lifetime: timedelta) -> ReleaseIndex:
    """`index` with `serial`, created `now` and expiring `lifetime` later; same releases."""
    if serial <= index.serial:
        msg = f"the new serial {serial} must be greater than the live index's {index.serial}"
        raise BuildError(msg)
    moment = now.astimezone(UTC)
    document = {
        **json.loads(dump_index(index)),
        "serial": serial,
        "created": moment.strftime(_STAMP),
        "expires": (moment + lifetime).strftime(_STAMP),
    }
    try:
        return parse_index(json.dumps(document).encode(), origin="the re-signed release index")
    except ManifestError as error:
        msg = f"cannot renew the release index: {error}"
        raise BuildError(msg) from None


def resign_index(
    source: str,
    out_dir: Path,
    trusted_keys: Sequence[str],
    *,
    key_file: Path | None,
    lifetime: timedelta,
    serial: int | None = None,
    now: datetime | None = None,
) -> list[Path]:
    """Verify the index at `source`, renew it and write it, signed, into `out_dir`.

    `serial` defaults to the epoch seconds of `now`, and at least the live serial + 1.
    """
    if lifetime <= timedelta(0):
        msg = f"the release index lifetime must be positive (got {lifetime})"
        raise BuildError(msg)
    private = load_signing_key(key_file, os.environ)
    signer = public_key_of(private)
    if signer not in trusted_keys:
        msg = (
            f"the signing key {key_id(signer)} is not in {TRUSTED_KEYS_FILE}: "
            "no released bundle would accept the index; sign with a trusted key"
        )
        raise BuildError(msg)
    data = _read(source)
    try:
        verify(data, _read(source + SIGNATURE_SUFFIX), trusted_keys)
        index = parse_index(data, origin=source)
    except (SignatureError, ManifestError) as error:
        msg = f"refusing to re-sign {source}: {error}"
        raise BuildError(msg) from None
    moment = now or datetime.now(UTC)
    if serial is None:
        serial = max(index.serial + 1, int(moment.timestamp()))
    new = renewed(index, serial, moment, lifetime)
    content = dump_index(new)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path, payload in (
        (out_dir / INDEX_NAME, content),
        (out_dir / f"{INDEX_NAME}{SIGNATURE_SUFFIX}", sign(content, private)),
    ):
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(payload)
        os.replace(partial, path)
        written.append(path)
    return written

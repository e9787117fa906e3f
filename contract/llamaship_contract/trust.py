"""The keys a bundle trusts, by role (TUF's roles): `trusted_keys.json`, read in one place.

- `release`: signs layer manifests, the release list (`overlays.json`) and the index of a
  tagged release. Only the signing job of a tag build holds it.
- `index`: signs `releases.json` only, for freshness (serial, expiry): the scheduled re-sign
  holds it. An index signed with it still pins a release list that the release key signed,
  so this key can neither add a release nor change a layer.

The file is JSON: `{"release": [<base64 ed25519 public key>, ...], "index": [...]}`. The
bundle carries its copy (package data); the build side reads the project's. Both parse it here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from llamaship_contract.signing import SigningKeyError, public_key_valid

ROLES = ("release", "index")


@dataclass(frozen=True)
class TrustedKeys:
    """Public keys by role; `release` keys are also accepted wherever an index key is."""

    release: tuple[str, ...]
    index: tuple[str, ...] = ()

    @property
    def for_index(self) -> tuple[str, ...]:
        """The keys whose signature on `releases.json` (freshness only) is accepted."""
        return self.release + tuple(key for key in self.index if key not in self.release)


def trusted(keys: TrustedKeys | Sequence[str]) -> TrustedKeys:
    """`keys` as `TrustedKeys`: a plain sequence is a set of release keys (no index key)."""
    return keys if isinstance(keys, TrustedKeys) else TrustedKeys(release=tuple(keys))


def parse_trusted_keys(data: bytes | str, origin: str) -> TrustedKeys:
    """Validate a `trusted_keys.json`; raises `SigningKeyError` naming what is wrong."""
    fix = f"{origin} must be a JSON object mapping 'release' and 'index' to lists of base64 " + (
        "ed25519 public keys (docs/releasing.md)"
    )
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        msg = f"{fix}; it is not JSON ({error})"
        raise SigningKeyError(msg) from None
    if not isinstance(document, dict) or sorted(document) != sorted(ROLES):
        raise SigningKeyError(fix)
    roles: dict[str, tuple[str, ...]] = {}
    for role in ROLES:
        keys = document[role]
        if not isinstance(keys, list) or not all(
            isinstance(key, str) and public_key_valid(key) for key in keys
        ):
            msg = f"{fix}; its {role!r} list is not"
            raise SigningKeyError(msg)
        roles[role] = tuple(keys)
    if not roles["release"]:
        msg = f"{origin} names no release key: nothing could ever be installed"
        raise SigningKeyError(msg)
    overlap = set(roles["release"]) & set(roles["index"])
    if overlap:
        msg = f"{origin} gives a key both roles: a key has one job (docs/releasing.md)"
        raise SigningKeyError(msg)
    return TrustedKeys(release=roles["release"], index=roles["index"])

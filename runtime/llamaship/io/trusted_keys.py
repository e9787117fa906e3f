"""Which release keys the runtime trusts: only those shipped inside the application.

The signature primitives (sign, verify, key ids) are the contract's
(`llamaship_contract.signing`); this module is the runtime's trust policy.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources

from llamaship_contract.signing import SigningKeyError, public_key_valid

TRUSTED_KEYS_RESOURCE = "trusted_keys.json"


def bundled_trusted_keys() -> tuple[str, ...]:
    """The release public keys shipped inside the application (`llamaship/trusted_keys.json`)."""
    resource = resources.files("llamaship").joinpath(TRUSTED_KEYS_RESOURCE)
    try:
        keys = json.loads(resource.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        msg = (
            f"cannot read the bundled trusted keys {TRUSTED_KEYS_RESOURCE} ({error}); "
            "reinstall the application"
        )
        raise SigningKeyError(msg) from None
    if not isinstance(keys, list) or not all(
        isinstance(key, str) and public_key_valid(key) for key in keys
    ):
        msg = (
            f"the bundled {TRUSTED_KEYS_RESOURCE} must be a JSON list of base64 ed25519 "
            "public keys; reinstall the application"
        )
        raise SigningKeyError(msg)
    return tuple(keys)


def trusted_keys(given: Sequence[str] | None = None) -> tuple[str, ...]:
    """The public keys whose signatures are accepted: `given` by the caller, else the bundled.

    No setting, environment variable or file adds one: a caller of the Python API (a test, a
    self-hosted launcher) passes its keys explicitly.
    """
    return tuple(given) if given is not None else bundled_trusted_keys()

"""Which release keys the runtime trusts: only those shipped inside the application.

The signature primitives (sign, verify, key ids) are the contract's
(`llamaship_contract.signing`); this module is the runtime's trust policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

from llamaship_contract.names import TRUSTED_KEYS_NAME
from llamaship_contract.signing import SigningKeyError, parse_trusted_keys


def bundled_trusted_keys() -> tuple[str, ...]:
    """The release public keys shipped inside the application (`llamaship/trusted_keys.json`)."""
    resource = resources.files("llamaship").joinpath(TRUSTED_KEYS_NAME)
    try:
        data = resource.read_bytes()
    except OSError as error:
        msg = (
            f"cannot read the bundled trusted keys {TRUSTED_KEYS_NAME} ({error}); "
            "reinstall the application"
        )
        raise SigningKeyError(msg) from None
    try:
        return parse_trusted_keys(data, f"the bundled {TRUSTED_KEYS_NAME}")
    except SigningKeyError as error:
        msg = f"{error}; reinstall the application"
        raise SigningKeyError(msg) from None


def trusted_keys(given: Sequence[str] | None = None) -> tuple[str, ...]:
    """The public keys whose signatures are accepted: `given` by the caller, else the bundled.

    No setting, environment variable or file adds one: a caller of the Python API (a test, a
    self-hosted launcher) passes its keys explicitly.
    """
    return tuple(given) if given is not None else bundled_trusted_keys()

"""Which keys the runtime trusts, by role: only those shipped inside the application.

The file format and the roles are the contract's (`llamaship_contract.trust`); the signature
primitives too (`llamaship_contract.signing`). This module is the runtime's trust policy: the
bundled `llamaship/trusted_keys.json`, or keys a caller of the Python API passes in.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

from llamaship_contract.names import TRUSTED_KEYS_NAME
from llamaship_contract.signing import SigningKeyError
from llamaship_contract.trust import TrustedKeys, parse_trusted_keys, trusted


def bundled_trusted_keys() -> TrustedKeys:
    """The public keys shipped inside the application (`llamaship/trusted_keys.json`)."""
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


def trusted_keys(given: TrustedKeys | Sequence[str] | None = None) -> TrustedKeys:
    """The public keys whose signatures are accepted: `given` by the caller, else the bundled.

    No setting, environment variable or file adds one: a caller of the Python API (a test, a
    self-hosted launcher) passes its keys explicitly; a plain sequence holds release keys.
    """
    return trusted(given) if given is not None else bundled_trusted_keys()

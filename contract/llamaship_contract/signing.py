"""ed25519 signatures over exact file bytes (manifests, the release index), for both sides.

Keys are raw 32-byte ed25519 keys in base64. A signature file `<name>.sig` is JSON:
{"key_id": sha256(raw public key) hex[:16], "signature": base64 of the 64-byte signature}.
Several public keys may be trusted at once, so the release key can be rotated. Which keys are
trusted is the caller's choice: the runtime trusts only the bundle's, the build side the
project's `trusted_keys.json`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from llamaship_contract.errors import LlamashipError
from llamaship_contract.names import ExitStatus
from llamaship_contract.textsafe import printable

_log = logging.getLogger(__name__)

KEY_BYTES = 32
SIGNATURE_BYTES = 64
SIGNING_KEY_ENV = "LLAMASHIP_SIGNING_KEY"


class SignatureError(LlamashipError):
    """A signature is missing, malformed, from an unknown key or does not match the bytes."""

    exit_code = ExitStatus.SIGNATURE


class SigningKeyError(LlamashipError):
    """A private or public key is not a base64 raw ed25519 key, or cannot be read."""

    exit_code = ExitStatus.CONFIG


def _raw_key(key_b64: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(key_b64.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_BYTES:
        # Never echo the value: it may be a private key.
        msg = (
            f"the {what} is not a base64 raw ed25519 key ({KEY_BYTES} bytes); "
            "create a key pair with `llamaship keys generate --out DIR`"
        )
        raise SigningKeyError(msg)
    return raw


def public_key_valid(public_b64: str) -> bool:
    """Whether `public_b64` is a base64 raw ed25519 public key (32 bytes)."""
    try:
        _raw_key(public_b64, "public key")
    except SigningKeyError:
        return False
    return True


def parse_trusted_keys(data: bytes, origin: str) -> tuple[str, ...]:
    """The release public keys in a `trusted_keys.json` (`origin` names it in errors).

    The one reader of that file's format, for the runtime (the bundled copy) and the build (the
    source tree's): a JSON list of base64 ed25519 public keys, several while a key rotates.
    """
    try:
        keys = json.loads(data)
    except ValueError as error:
        msg = f"{origin} is not JSON ({error})"
        raise SigningKeyError(msg) from None
    if not isinstance(keys, list) or not all(
        isinstance(key, str) and public_key_valid(key) for key in keys
    ):
        msg = f"{origin} must be a JSON list of base64 ed25519 public keys"
        raise SigningKeyError(msg)
    return tuple(keys)


def generate_keypair() -> tuple[str, str]:
    """A new ed25519 key pair as (private seed, public key), both base64."""
    from nacl.signing import SigningKey

    private = SigningKey.generate()
    return (
        base64.b64encode(bytes(private)).decode("ascii"),
        base64.b64encode(bytes(private.verify_key)).decode("ascii"),
    )


def key_id(public_b64: str) -> str:
    """The short name of a public key: the first 16 hex digits of sha256(raw key)."""
    return hashlib.sha256(_raw_key(public_b64, "public key")).hexdigest()[:16]


def public_key_of(private_b64: str) -> str:
    """The base64 public key that belongs to a base64 private key."""
    from nacl.signing import SigningKey

    private = SigningKey(_raw_key(private_b64, "signing key"))
    return base64.b64encode(bytes(private.verify_key)).decode("ascii")


def sign(data: bytes, private_b64: str) -> bytes:
    """The `.sig` file bytes for `data`, signed with the base64 private key."""
    from nacl.signing import SigningKey

    private = SigningKey(_raw_key(private_b64, "signing key"))
    public_b64 = base64.b64encode(bytes(private.verify_key)).decode("ascii")
    signature = private.sign(data).signature
    document = {
        "key_id": key_id(public_b64),
        "signature": base64.b64encode(signature).decode("ascii"),
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _parse_signature(sig_bytes: bytes | None) -> tuple[str, bytes]:
    if not sig_bytes:
        msg = "the signature is missing: the file was not signed or its .sig was not published"
        raise SignatureError(msg)
    try:
        document = json.loads(sig_bytes.decode("utf-8"))
        key = document["key_id"]
        signature = base64.b64decode(document["signature"], validate=True)
    except (
        UnicodeDecodeError,
        json.JSONDecodeError,
        KeyError,
        TypeError,
        binascii.Error,
        ValueError,
    ):
        msg = (
            'the signature is malformed: expected JSON {"key_id": ..., "signature": base64}; '
            "download the .sig file again"
        )
        raise SignatureError(msg) from None
    if not isinstance(key, str) or len(signature) != SIGNATURE_BYTES:
        msg = (
            f"the signature is malformed: key_id must be a string and the signature "
            f"{SIGNATURE_BYTES} bytes"
        )
        raise SignatureError(msg)
    return key, signature


def verify(data: bytes, sig_bytes: bytes | None, trusted_public_keys: Sequence[str]) -> str:
    """Check `sig_bytes` (a `.sig` file) over `data`; returns the id of the key that signed it."""
    from nacl.exceptions import BadSignatureError
    from nacl.signing import VerifyKey

    signer, signature = _parse_signature(sig_bytes)
    by_id = {key_id(public): public for public in trusted_public_keys}
    public = by_id.get(signer)
    if public is None:
        trusted = ", ".join(sorted(by_id)) or "none"
        msg = (
            f"the signature is from unknown key {printable(signer, 64)} (trusted keys: "
            f"{trusted}); "
            "the file is not from this application's publisher, or the application needs "
            "an update that trusts the new release key"
        )
        raise SignatureError(msg)
    try:
        VerifyKey(_raw_key(public, "public key")).verify(data, signature)
    except BadSignatureError:
        msg = (
            f"bad signature: the signed bytes were changed after key {signer} signed them "
            "(corrupt download or tampering); download them again"
        )
        raise SignatureError(msg) from None
    return signer


def load_signing_key(path: Path | None, environ: Mapping[str, str]) -> str:
    """The base64 private key from `path`, else from $LLAMASHIP_SIGNING_KEY (a CI secret)."""
    if path is not None:
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as error:
            msg = f"cannot read the signing key file {path} ({type(error).__name__})"
            raise SigningKeyError(msg) from None
        origin = f"signing key in {path}"
    elif environ.get(SIGNING_KEY_ENV, "").strip():
        text = environ[SIGNING_KEY_ENV]
        origin = f"signing key in ${SIGNING_KEY_ENV}"
    else:
        msg = (
            f"no signing key: pass a key file or set {SIGNING_KEY_ENV} "
            "(create one with `llamaship keys generate --out DIR`)"
        )
        raise SigningKeyError(msg)
    private_b64 = text.strip()
    _raw_key(private_b64, origin)
    _log.info("signing with key %s from the %s", key_id(public_key_of(private_b64)), origin)
    return private_b64

"""The release's one signing step: check the key, sign the layer manifests, write the index.

The release workflow builds the overlay unsigned (`overlay --unsigned`) in a job that never
sees the key; only the step running `sign-release` has it. The key must be one the bundle
trusts (runtime/llamaship/trusted_keys.json, baked into every bundle): an index signed with any
other key would be refused by every installed runtime, so the step fails before signing.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from pathlib import Path

from llamaship_build.errors import BuildError
from llamaship_build.project import TRUSTED_KEYS_FILE
from llamaship_contract.names import SIGNATURE_SUFFIX
from llamaship_contract.overlay import parse_manifest
from llamaship_contract.overlay_fields import ManifestError
from llamaship_contract.signing import (
    generate_keypair,
    key_id,
    load_signing_key,
    public_key_of,
    sign,
)
from llamaship_contract.trust import TrustedKeys

DRY_RUN_NOTE = "no bundle trusts it: nothing it signed can be installed"
_log = logging.getLogger(__name__)


class UntrustedSigningKey(BuildError):
    """The signing key's public half is not among the keys the bundle trusts."""


def check_signing_key(private_b64: str, trusted: TrustedKeys) -> str:
    """The key id of `private_b64`'s public half; raises unless it is a trusted release key."""
    public = public_key_of(private_b64)
    if public not in trusted.release:
        known = ", ".join(key_id(key) for key in trusted.release) or "none"
        msg = (
            f"the signing key's public half ({key_id(public)}) is not in {TRUSTED_KEYS_FILE} "
            f"(trusted: {known}); no released bundle would accept what it signs: ship its "
            "public key in a bundle first (docs/releasing.md, rotation) or use the right "
            "secret"
        )
        raise UntrustedSigningKey(msg)
    return key_id(public)


def sign_manifests(overlay_dir: Path, private_b64: str) -> list[Path]:
    """Validate and sign every layer manifest (`*.json`) in `overlay_dir`; returns the `.sig`s."""
    signatures = []
    manifests = sorted(overlay_dir.glob("*.json"))
    if not manifests:
        msg = f"no layer manifests in {overlay_dir}: build the overlay first (`nox -s overlay`)"
        raise BuildError(msg)
    for manifest in manifests:
        data = manifest.read_bytes()
        try:
            parse_manifest(data, origin=str(manifest))
        except ManifestError as error:
            msg = f"refusing to sign {manifest}: {error}"
            raise BuildError(msg) from None
        signature = manifest.with_name(manifest.name + SIGNATURE_SUFFIX)
        partial = signature.with_name(signature.name + ".partial")
        partial.write_bytes(sign(data, private_b64))
        os.replace(partial, signature)
        signatures.append(signature)
    return signatures


def sign_release(
    overlay_dir: Path,
    out_dir: Path,
    trusted: TrustedKeys,
    *,
    serial: int,
    base_url: str,
    key_file: Path | None,
    lifetime: timedelta,
    dry_run: bool = False,
) -> list[Path]:
    """Check the key, sign the manifests, then write the signed index into `out_dir`.

    `dry_run`: sign with a throwaway key that no bundle trusts, so the whole step runs
    without the release key (a manual workflow run); what it writes installs nowhere.
    """
    from llamaship_build.overlay_release import release

    if not any(overlay_dir.glob("*.json")):
        _log.warning(
            "no overlay layers in %s: the release carries the bundles alone and no index is "
            "written (the live index stays as it is)",
            overlay_dir,
        )
        return []
    if dry_run:
        private, public = generate_keypair()
        _log.warning("dry run: signing with throwaway key %s (%s)", key_id(public), DRY_RUN_NOTE)
    else:
        private = load_signing_key(key_file, os.environ)
        check_signing_key(private, trusted)
    signatures = sign_manifests(overlay_dir, private)
    return signatures + release(overlay_dir, out_dir, serial, base_url, private, lifetime=lifetime)

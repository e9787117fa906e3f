"""`llamaship keys generate --out DIR`: create the ed25519 key pair that signs overlays."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from llamaship_contract.errors import LlamashipError
from llamaship_contract.names import ExitStatus

PRIVATE_KEY_FILE = "signing-key.b64"
PUBLIC_KEY_FILE = "signing-key.pub.b64"


class KeyFileExists(LlamashipError):
    """A key file is already there; generating would overwrite a key."""

    exit_code = ExitStatus.CONFIG


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("keys", help="manage the keys that sign CUDA overlays")
    actions = parser.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    generate = actions.add_parser(
        "generate", help=f"write a new key pair ({PRIVATE_KEY_FILE}, {PUBLIC_KEY_FILE})"
    )
    generate.add_argument("--out", type=Path, required=True, help="directory for the key files")


def _write_new(path: Path, text: str, mode: int) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(text + "\n")


def run(args: argparse.Namespace) -> int:
    from llamaship_contract.signing import generate_keypair, key_id

    out: Path = args.out
    private_path, public_path = out / PRIVATE_KEY_FILE, out / PUBLIC_KEY_FILE
    existing = [str(path) for path in (private_path, public_path) if path.exists()]
    if existing:
        msg = (
            f"refusing to overwrite {', '.join(existing)}: a key there may already sign "
            "releases; choose another --out directory or move the files away first"
        )
        raise KeyFileExists(msg)
    out.mkdir(parents=True, exist_ok=True)
    private_b64, public_b64 = generate_keypair()
    _write_new(private_path, private_b64, 0o600)
    _write_new(public_path, public_b64, 0o644)
    print(f"public key: {public_b64}")
    print(f"key id:     {key_id(public_b64)}")
    print(
        f"private key written to {private_path} (mode 0600): keep it secret, "
        "e.g. as the CI secret LLAMASHIP_SIGNING_KEY"
    )
    return 0

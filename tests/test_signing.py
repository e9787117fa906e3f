"""ed25519 signatures of overlay files: round trip and every way verification must fail."""

from __future__ import annotations

import argparse
import base64
import json
from pathlib import Path

import pytest

from llamaship.cli import keys as cli_keys
from llamaship.config import resolve_settings
from llamaship.errors import ConfigError
from llamaship.io.trusted_keys import bundled_trusted_keys, trusted_keys
from llamaship_build.errors import BuildError
from llamaship_build.project import Project
from llamaship_build.spec import trusted_keys as source_trusted_keys
from llamaship_contract.signing import (
    SignatureError,
    SigningKeyError,
    generate_keypair,
    key_id,
    load_signing_key,
    sign,
    verify,
)
from llamaship_contract.trust import TrustedKeys, parse_trusted_keys

DATA = b'{"format":1,"layer":"llama-cuda"}'


def test_round_trip_returns_signing_key_id() -> None:
    private, public = generate_keypair()
    signature = sign(DATA, private)
    assert verify(DATA, signature, [public]) == key_id(public)
    document = json.loads(signature)
    assert document["key_id"] == key_id(public)
    assert len(base64.b64decode(document["signature"])) == 64


def test_any_trusted_key_of_a_rotation_list_verifies() -> None:
    old_private, old_public = generate_keypair()
    _, new_public = generate_keypair()
    assert verify(DATA, sign(DATA, old_private), [new_public, old_public]) == key_id(old_public)


def test_key_id_is_sha256_prefix_of_raw_key() -> None:
    import hashlib

    _, public = generate_keypair()
    assert key_id(public) == hashlib.sha256(base64.b64decode(public)).hexdigest()[:16]


def test_wrong_key_is_unknown() -> None:
    private, _ = generate_keypair()
    _, other_public = generate_keypair()
    with pytest.raises(SignatureError, match="unknown key"):
        verify(DATA, sign(DATA, private), [other_public])


def test_signature_copied_under_a_trusted_key_id_is_bad() -> None:
    private, _ = generate_keypair()
    _, trusted_public = generate_keypair()
    forged = json.loads(sign(DATA, private))
    forged["key_id"] = key_id(trusted_public)
    with pytest.raises(SignatureError, match="bad signature"):
        verify(DATA, json.dumps(forged).encode(), [trusted_public])


@pytest.mark.parametrize("flip", [0, len(DATA) // 2, len(DATA) - 1])
def test_tampered_bytes_fail(flip: int) -> None:
    private, public = generate_keypair()
    signature = sign(DATA, private)
    tampered = bytearray(DATA)
    tampered[flip] ^= 0x01
    with pytest.raises(SignatureError, match="bad signature"):
        verify(bytes(tampered), signature, [public])


def test_missing_signature() -> None:
    _, public = generate_keypair()
    for missing in (None, b""):
        with pytest.raises(SignatureError, match="missing"):
            verify(DATA, missing, [public])


@pytest.mark.parametrize(
    "sig",
    [
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'{"key_id": "abc"}',
        b'{"key_id": "abc", "signature": "***"}',
        b'{"key_id": 5, "signature": "' + base64.b64encode(b"x" * 64) + b'"}',
        b'{"key_id": "abc", "signature": "' + base64.b64encode(b"short") + b'"}',
    ],
)
def test_malformed_signature(sig: bytes) -> None:
    _, public = generate_keypair()
    with pytest.raises(SignatureError, match="malformed"):
        verify(DATA, sig, [public])


def test_bad_private_key_is_refused_without_echoing_it() -> None:
    with pytest.raises(SigningKeyError) as raised:
        sign(DATA, "c2VjcmV0LXRvby1zaG9ydA==")
    assert "c2VjcmV0" not in str(raised.value)


def test_trusted_keys_are_the_bundled_ones_unless_the_caller_passes_others() -> None:
    bundled = bundled_trusted_keys()
    assert bundled.release, "llamaship/trusted_keys.json must hold the release public key(s)"
    _, extra = generate_keypair()
    assert trusted_keys() == bundled
    assert trusted_keys([extra]) == TrustedKeys(release=(extra,))
    assert trusted_keys(TrustedKeys((extra,), (bundled.release[0],))).index == bundled.release
    assert trusted_keys(()) == TrustedKeys(release=())


def test_the_bundled_keys_and_the_source_trees_are_read_alike() -> None:
    """The runtime's and the build's readers share the contract's parser: same keys."""
    root = Path(__file__).resolve().parent.parent
    assert source_trusted_keys(Project(root)) == bundled_trusted_keys()


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"not json", "it is not JSON"),
        (b'{"release": []}', "must be a JSON object mapping 'release' and 'index'"),
        (b'["c2hvcnQ="]', "must be a JSON object mapping 'release' and 'index'"),
        (b'{"release": [7], "index": []}', "its 'release' list is not"),
    ],
)
def test_a_malformed_trusted_keys_file_is_refused_by_the_runtime_and_the_build(
    data: bytes, problem: str, tmp_path: Path
) -> None:
    with pytest.raises(SigningKeyError, match=f"^keys.json .*{problem}"):
        parse_trusted_keys(data, "keys.json")
    source = tmp_path / "runtime" / "llamaship" / "trusted_keys.json"
    source.parent.mkdir(parents=True)
    source.write_bytes(data)
    with pytest.raises(BuildError, match=problem):
        source_trusted_keys(Project(tmp_path))


def test_a_trusted_keys_file_lists_keys_by_role_in_their_order() -> None:
    _, first = generate_keypair()
    _, second = generate_keypair()
    _, index = generate_keypair()
    data = json.dumps({"release": [second, first], "index": [index]}).encode()
    assert parse_trusted_keys(data, "keys.json") == TrustedKeys((second, first), (index,))


@pytest.mark.parametrize("origin", ["environment", "env_file"])
def test_no_setting_adds_a_trusted_key(origin: str, tmp_path: Path) -> None:
    """LLAMASHIP_TRUSTED_KEYS is gone: naming it is refused, with the reason, wherever it is."""
    _, attacker = generate_keypair()
    env = {"LLAMASHIP_HOME": str(tmp_path)}
    env_file = None
    if origin == "environment":
        env["LLAMASHIP_TRUSTED_KEYS"] = attacker
    else:
        env_file = tmp_path / ".env"
        env_file.write_text(f"LLAMASHIP_TRUSTED_KEYS={attacker}\n")
    with pytest.raises(ConfigError, match="come only from the application bundle"):
        resolve_settings(env=env, env_file=env_file)


def test_signing_key_env_is_not_an_unknown_option() -> None:
    private, _ = generate_keypair()
    resolve_settings(env={"LLAMASHIP_HOME": "/x", "LLAMASHIP_SIGNING_KEY": private})


def test_load_signing_key_from_file_then_env(tmp_path: Path) -> None:
    file_private, _ = generate_keypair()
    env_private, _ = generate_keypair()
    key_file = tmp_path / "key.b64"
    key_file.write_text(file_private + "\n")
    env = {"LLAMASHIP_SIGNING_KEY": env_private}
    assert load_signing_key(key_file, env) == file_private
    assert load_signing_key(None, env) == env_private
    with pytest.raises(SigningKeyError, match="no signing key"):
        load_signing_key(None, {})
    with pytest.raises(SigningKeyError, match="cannot read"):
        load_signing_key(tmp_path / "absent.b64", env)


def run_keys(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    cli_keys.add_parser(parser.add_subparsers())
    return cli_keys.run(parser.parse_args(list(argv)))


def test_keys_generate_writes_a_working_pair(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "keys"
    assert run_keys("keys", "generate", "--out", str(out)) == 0
    private = (out / "signing-key.b64").read_text().strip()
    public = (out / "signing-key.pub.b64").read_text().strip()
    assert (out / "signing-key.b64").stat().st_mode & 0o777 == 0o600
    printed = capsys.readouterr().out
    assert public in printed and key_id(public) in printed and private not in printed
    assert verify(DATA, sign(DATA, private), [public]) == key_id(public)


def test_keys_generate_refuses_to_overwrite(tmp_path: Path) -> None:
    (tmp_path / "signing-key.pub.b64").write_text("keep me\n")
    with pytest.raises(cli_keys.KeyFileExists, match="refusing to overwrite") as raised:
        run_keys("keys", "generate", "--out", str(tmp_path))
    assert raised.value.exit_code == 2
    assert (tmp_path / "signing-key.pub.b64").read_text() == "keep me\n"
    assert not (tmp_path / "signing-key.b64").exists()

"""The release index expires (TUF's freeze attack): the runtime refuses an index past its
`expires` wherever it reads one (install, launch-time availability check) before recording
its serial; the build sets the expiry and `resign-index` renews the live index."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hardware.fakes import RTX_3060, FakeHardware
from llamaship.io.fetch import Fetcher
from llamaship.overlay.freshness import IndexExpired, ensure_unexpired
from llamaship.overlay.install import Installer
from llamaship.overlay.installed import AcceptedSerials
from llamaship.overlay.select import find_overlay
from llamaship.overlay.store import OverlayStore
from llamaship.paths import DataDirs
from llamaship_build.__main__ import main as build_main
from llamaship_build.errors import BuildError
from llamaship_build.resign_index import resign_index
from llamaship_contract.names import ExitStatus
from llamaship_contract.release_index import parse_index
from llamaship_contract.signing import SignatureError, generate_keypair, verify
from llamaship_contract.trust import TrustedKeys
from overlay_kit.probe import layer_probe
from overlay_kit.releases import (
    FAST_OPTIONS,
    LLAMA_CPP_VERSION,
    TARGET,
    Keys,
    ReleaseFactory,
    ReleaseSpec,
    rewrite_index,
    rewrite_list,
)

V1 = ReleaseSpec(overlay_version="0.3.36-cu13.0-1", serial=1)
PAST = {"created": "2026-01-01T00:00:00Z", "expires": "2026-01-31T00:00:00Z"}


def expire(document: dict[str, Any]) -> None:
    document.update(PAST)


def test_boundary_of_the_expiry(releases: ReleaseFactory, tmp_path: Path) -> None:
    index = parse_index(releases.publish(tmp_path / "r", V1).read_bytes())
    ensure_unexpired(index, "here", now=index.expires_at - timedelta(seconds=1))
    with pytest.raises(IndexExpired, match=r"expired on .* clock") as raised:
        ensure_unexpired(index, "here", now=index.expires_at)
    assert raised.value.exit_code == ExitStatus.INDEX_EXPIRED


def test_new_index_expires_after_the_default_lifetime(
    releases: ReleaseFactory, tmp_path: Path
) -> None:
    index = parse_index(releases.publish(tmp_path / "r", V1).read_bytes())
    lifetime = index.expires_at - datetime.fromisoformat(index.created).astimezone(UTC)
    assert lifetime == timedelta(days=30)


def test_install_refuses_an_expired_index_and_records_nothing(
    releases: ReleaseFactory, release_keys: Keys, data_dirs: DataDirs, tmp_path: Path
) -> None:
    index = releases.publish(tmp_path / "r", V1)
    rewrite_index(index, release_keys, expire)
    installer = Installer(data_dirs, [release_keys.public], probe=layer_probe, options=FAST_OPTIONS)
    with pytest.raises(IndexExpired, match="expired on 2026-01-31T00:00:00Z"):
        installer.install(str(index), TARGET)
    store = OverlayStore(data_dirs)
    assert store.active() is None
    assert store.accepted_serials() == AcceptedSerials()


def test_availability_check_refuses_an_expired_index(
    releases: ReleaseFactory, release_keys: Keys, data_dirs: DataDirs, tmp_path: Path
) -> None:
    index = releases.publish(tmp_path / "r", V1)
    rewrite_index(index, release_keys, expire)
    with Fetcher(FAST_OPTIONS.limits) as fetcher, pytest.raises(IndexExpired):
        find_overlay(str(index), OverlayStore(data_dirs), TARGET, [release_keys.public], fetcher)


def test_cli_install_of_an_expired_index_ends_with_one_error_line(
    hardware: FakeHardware, releases: ReleaseFactory, release_keys: Keys, tmp_path: Path
) -> None:
    hardware.install_nvml()
    hardware.gpus = [RTX_3060]
    hardware.driver_version, hardware.cuda_version = "580.95.05", 13000
    index = releases.publish(tmp_path / "r", V1)
    rewrite_index(index, release_keys, expire)
    result = hardware.run_cli(
        "overlay",
        "install",
        str(index.parent),
        "--llama-cpp-version",
        LLAMA_CPP_VERSION,
        trust=release_keys.public,
    )
    assert result.returncode == ExitStatus.INDEX_EXPIRED, result.stderr
    *_, line = result.stderr.splitlines()  # after the progress and log lines
    assert line.startswith("llamaship: error: ") and "expired on 2026-01-31T00:00:00Z" in line
    assert "Traceback" not in result.stderr


# -- renewing the live index (the scheduled release job) ------------------------------------


def key_file(tmp_path: Path, keys: Keys) -> Path:
    path = tmp_path / "signing-key.b64"
    path.write_text(keys.private + "\n")
    return path


@pytest.fixture
def index_keys() -> Keys:
    """The index key: trusted for the freshness of releases.json only."""
    private, public = generate_keypair()
    return Keys(private=private, public=public)


def test_resign_renews_an_expired_index_that_installs_again(
    releases: ReleaseFactory,
    release_keys: Keys,
    index_keys: Keys,
    data_dirs: DataDirs,
    tmp_path: Path,
) -> None:
    trusted = TrustedKeys(release=(release_keys.public,), index=(index_keys.public,))
    live = releases.publish(tmp_path / "live", V1, serial=5)
    rewrite_index(live, release_keys, expire)
    before = parse_index(live.read_bytes())
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    out = tmp_path / "live-renewed"
    index_path, signature_path = resign_index(
        str(live),
        out,
        trusted,
        key_file=key_file(tmp_path, index_keys),
        lifetime=timedelta(days=10),
        now=now,
    )
    renewed = parse_index(index_path.read_bytes())
    assert renewed.overlays == before.overlays
    assert renewed.serial == int(now.timestamp()) > before.serial
    assert renewed.expires == "2026-12-11T12:00:00Z"
    verify(index_path.read_bytes(), signature_path.read_bytes(), [index_keys.public])
    assert sorted(path.name for path in out.iterdir()) == ["releases.json", "releases.json.sig"]
    for path in live.parent.iterdir():  # publish beside the layers, as the job uploads it
        if path.name not in {index_path.name, signature_path.name}:
            (out / path.name).write_bytes(path.read_bytes())
    result = Installer(data_dirs, trusted, probe=layer_probe, options=FAST_OPTIONS).install(
        str(index_path), TARGET
    )
    assert result.overlay.overlay_version == V1.overlay_version


def test_the_index_key_cannot_add_or_change_a_release(
    releases: ReleaseFactory,
    release_keys: Keys,
    index_keys: Keys,
    data_dirs: DataDirs,
    tmp_path: Path,
) -> None:
    """A release list signed by the index key is refused, even pinned by a valid index."""
    trusted = TrustedKeys(release=(release_keys.public,), index=(index_keys.public,))
    live = releases.publish(tmp_path / "live", V1)
    rewrite_list(live, index_keys, lambda document: document["overlays"][0].update(serial=1))
    installer = Installer(data_dirs, trusted, probe=layer_probe, options=FAST_OPTIONS)
    with pytest.raises(SignatureError, match=r"release list .*unknown key"):
        installer.install(str(live), TARGET)
    assert OverlayStore(data_dirs).active() is None


def test_resign_refuses_an_index_it_cannot_verify_and_a_key_without_the_index_role(
    releases: ReleaseFactory,
    release_keys: Keys,
    index_keys: Keys,
    stranger_keys: Keys,
    tmp_path: Path,
) -> None:
    trusted = TrustedKeys(release=(release_keys.public,), index=(index_keys.public,))
    live = releases.publish(tmp_path / "live", V1)
    rewrite_index(live, stranger_keys, expire)  # served by someone else
    with pytest.raises(BuildError, match=r"refusing to re-sign: .*unknown key"):
        resign_index(
            str(live),
            tmp_path / "out",
            trusted,
            key_file=key_file(tmp_path, index_keys),
            lifetime=timedelta(days=30),
        )
    for keys in (stranger_keys, release_keys):  # the release key has another job
        with pytest.raises(BuildError, match=r"not an index key in runtime/llamaship/trusted"):
            resign_index(
                str(live),
                tmp_path / "out",
                trusted,
                key_file=key_file(tmp_path, keys),
                lifetime=timedelta(days=30),
            )
    assert not (tmp_path / "out").exists()


def test_resign_refuses_a_release_list_that_is_not_the_pinned_one(
    releases: ReleaseFactory, release_keys: Keys, index_keys: Keys, tmp_path: Path
) -> None:
    trusted = TrustedKeys(release=(release_keys.public,), index=(index_keys.public,))
    live = releases.publish(tmp_path / "live", V1)
    rewrite_list(live, release_keys, lambda document: document.update(serial=2), repin=False)
    with pytest.raises(BuildError, match="is not the release list it pins"):
        resign_index(
            str(live),
            tmp_path / "out",
            trusted,
            key_file=key_file(tmp_path, index_keys),
            lifetime=timedelta(days=30),
        )


@pytest.mark.parametrize("command", ["release", "resign-index"])
@pytest.mark.parametrize("days", ["0", "soon"])
def test_expiry_option_takes_whole_positive_days(
    command: str, days: str, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = [
        command,
        *(["live/releases.json"] if command == "resign-index" else []),
        "--expires-in-days",
        days,
    ]
    with pytest.raises(SystemExit) as exited:
        build_main(arguments)
    assert exited.value.code == 2
    assert "--expires-in-days" in capsys.readouterr().err

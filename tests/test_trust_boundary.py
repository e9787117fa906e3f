"""Release keys come only from the bundle: a key planted in a `.env` (in the working directory
or in LLAMASHIP_HOME) or in the environment neither installs an attacker's overlay nor records
the attacker's serials, so the genuine releases still install afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest

from hardware.fakes import RTX_3060, FakeHardware
from llamaship.overlay.install import Installer
from llamaship.overlay.installed import AcceptedSerials
from llamaship.overlay.store import OverlayStore
from llamaship.paths import DataDirs
from llamaship_contract.names import ExitStatus
from overlay_kit.probe import layer_probe
from overlay_kit.releases import (
    FAST_OPTIONS,
    LLAMA_CPP_VERSION,
    TARGET,
    Keys,
    ReleaseFactory,
    ReleaseSpec,
)

GENUINE = ReleaseSpec(overlay_version="0.3.36-cu13.0-1", serial=1)
# The attacker's release claims a far higher serial: accepted once, it would block GENUINE.
ATTACK = ReleaseSpec(overlay_version="0.3.36-cu13.0-999", serial=999)


@pytest.mark.parametrize(
    ("plant", "status"),
    [
        ("working-directory .env", ExitStatus.SIGNATURE),  # never read: the bundled keys refuse it
        ("LLAMASHIP_HOME/.env", ExitStatus.CONFIG),  # read, and the key is refused by name
        ("environment", ExitStatus.CONFIG),
    ],
)
def test_a_planted_key_installs_nothing_and_blocks_nothing(
    plant: str,
    status: ExitStatus,
    hardware: FakeHardware,
    releases: ReleaseFactory,
    release_keys: Keys,
    stranger_keys: Keys,
    tmp_path: Path,
) -> None:
    hardware.install_nvml()
    hardware.gpus = [RTX_3060]
    hardware.driver_version, hardware.cuda_version = "580.95.05", 13000
    attacker = ReleaseFactory(tmp_path / "attacker-scratch", stranger_keys)
    attack_index = attacker.publish(tmp_path / "attack", ATTACK)
    planted = f"LLAMASHIP_TRUSTED_KEYS={stranger_keys.public}\n"
    extra_env: dict[str, str] = {}
    if plant == "working-directory .env":
        (hardware.root / ".env").write_text(planted)  # run_cli runs in hardware.root
    elif plant == "LLAMASHIP_HOME/.env":
        hardware.home.mkdir(parents=True, exist_ok=True)
        (hardware.home / ".env").write_text(planted)
    else:
        extra_env["LLAMASHIP_TRUSTED_KEYS"] = stranger_keys.public

    result = hardware.run_cli(
        "overlay",
        "install",
        str(attack_index.parent),
        "--llama-cpp-version",
        LLAMA_CPP_VERSION,
        **extra_env,
    )

    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    expected = "unknown key" if status == ExitStatus.SIGNATURE else "LLAMASHIP_TRUSTED_KEYS"
    assert expected in result.stderr
    dirs = DataDirs(hardware.home)
    store = OverlayStore(dirs)
    assert store.active() is None
    assert store.accepted_serials() == AcceptedSerials()

    genuine_index = releases.publish(tmp_path / "genuine", GENUINE)
    installed = Installer(
        dirs, [release_keys.public], probe=layer_probe, options=FAST_OPTIONS
    ).install(str(genuine_index), TARGET)
    assert installed.overlay.overlay_version == GENUINE.overlay_version
    assert store.accepted_serials() == AcceptedSerials(index=1, manifest=1)

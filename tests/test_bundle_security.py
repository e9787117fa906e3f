"""The frozen bundle's `backend serve` against every attack of security_attacks.py."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
import pytest

from hardware.fakes import FakeHardware
from llamaship.admin_token import token_path
from llamaship_build.launch import launched
from security_attacks import ALLOWED, ATTACKS, refused_before_the_body

pytestmark = pytest.mark.slow


def test_the_bundle_refuses_every_attack_and_serves_its_own_callers(
    bundle_executable: Path, hardware: FakeHardware
) -> None:
    with launched([str(bundle_executable)], hardware.env(), inherit_env=False) as backend:
        path = token_path(hardware.home)
        token = path.read_text()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(token) == 64
        port = int(backend.url.rsplit(":", 1)[1])
        with httpx.Client(base_url=backend.url, timeout=30) as client:
            for call in [*ATTACKS, *ALLOWED]:
                call.check(call.send(client, token, port), token)
            assert refused_before_the_body(port).startswith(b"HTTP/1.1 415 ")
            assert client.get("/api/health").status_code == 200  # still up: nothing restarted
        log = backend.log.read_text(errors="replace")
    assert backend.process.returncode == 0, log
    assert token not in log

"""The API's trust boundary over real HTTP on loopback (docs/security.md): the admin token, the
Host, Origin and Content-Type rules against each attack in security_attacks.py, the bind."""

from __future__ import annotations

import hmac
import logging
import re
import signal
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from fixtures_backend import (
    BackendProcess,
    RunningBackend,
    admin_headers,
    no_gpu_boot_state,
    serving,
)
from hardware.fakes import FakeHardware
from llamaship.admin_token import read_or_create, token_path
from llamaship_backend.app import create_app
from llamaship_backend.engine import Engine
from llamaship_backend.security import ADMIN_SCHEME
from security_attacks import ALLOWED, ATTACKS, Call, refused_before_the_body

StartBackend = Callable[..., RunningBackend]
LaunchBackend = Callable[..., BackendProcess]
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBackend]:
    """One backend (no model, no release URL) for every attack of this module."""
    with serving(no_gpu_boot_state(tmp_path_factory.mktemp("home"))) as backend:
        yield backend


def token_of(backend: RunningBackend) -> str:
    return token_path(backend.state.dirs.home).read_text()


@pytest.mark.parametrize("call", ATTACKS, ids=[call.name for call in ATTACKS])
def test_the_attack_is_refused(guarded: RunningBackend, call: Call) -> None:
    token = token_of(guarded)
    with guarded.client() as client:
        call.check(call.send(client, token, port_of(guarded.url)), token)
    assert not guarded.server.should_exit  # e.g. no restart slipped through


@pytest.mark.parametrize("call", ALLOWED, ids=[call.name for call in ALLOWED])
def test_local_programs_and_the_servers_own_page_get_through(
    guarded: RunningBackend, call: Call
) -> None:
    token = token_of(guarded)
    with guarded.client() as client:
        call.check(call.send(client, token, port_of(guarded.url)), token)


def test_a_refused_post_is_answered_before_its_body_arrives(guarded: RunningBackend) -> None:
    head = refused_before_the_body(port_of(guarded.url))
    assert head.startswith(b"HTTP/1.1 415 "), head
    assert not guarded.server.should_exit


def test_the_token_is_compared_in_constant_time(
    guarded: RunningBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    constant_time = hmac.compare_digest

    def spy(presented: bytes, expected: bytes) -> bool:
        compared.append((presented, expected))
        return constant_time(presented, expected)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # the module require_admin calls
    token = token_of(guarded)
    with guarded.client() as client:
        wrong = client.get("/api/admin/upgrade-gpu/x", headers={"Authorization": "Bearer 1234"})
        right = client.get(
            "/api/admin/upgrade-gpu/x", headers=admin_headers(guarded.state.dirs.home)
        )
    assert (wrong.status_code, right.status_code) == (401, 404)
    assert compared == [(b"1234", token.encode()), (token.encode(), token.encode())]


def test_every_admin_and_state_changing_route_needs_the_token(tmp_path: Path) -> None:
    """A route added later without `require_admin` fails here (the OpenAI routes are for local
    programs: the guard's Origin and Content-Type rules keep web pages out of them)."""
    state = no_gpu_boot_state(tmp_path)
    paths = create_app(state, Engine(state)).openapi()["paths"]
    checked = []
    for path, operations in paths.items():
        for method, operation in operations.items():
            state_changing = method.upper() not in SAFE_METHODS and not path.startswith("/v1/")
            if path.startswith("/api/admin/") or state_changing:
                assert {ADMIN_SCHEME: []} in operation.get("security", []), (method, path)
                checked.append(f"{method} {path}")
    assert {
        "post /api/admin/benchmark",
        "post /api/admin/restart",
        "post /api/admin/upgrade-gpu",
        "get /api/admin/upgrade-gpu/{job_id}",
    } <= set(checked)


def test_the_right_token_restarts_the_server(start_backend: StartBackend) -> None:
    backend = start_backend()
    with backend.admin_client() as client:
        reply = client.post("/api/admin/restart")
    assert reply.status_code == 202, reply.text
    deadline = time.monotonic() + 10
    while not backend.server.should_exit and time.monotonic() < deadline:
        time.sleep(0.01)
    assert backend.server.should_exit


def test_the_token_file_is_private_and_holds_256_bits(start_backend: StartBackend) -> None:
    home = start_backend().state.dirs.home
    path = token_path(home)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert re.fullmatch(r"[0-9a-f]{64}", path.read_text())
    assert read_or_create(home) == path.read_text()


def test_tokens_are_never_logged(
    start_backend: StartBackend, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "f" * 64
    with caplog.at_level(logging.DEBUG):
        backend = start_backend()
        with backend.client() as client:
            client.post("/api/admin/upgrade-gpu", headers={"Authorization": f"Bearer {wrong}"})
            client.post("/api/admin/upgrade-gpu", headers=admin_headers(backend.state.dirs.home))
    assert "admin token" in caplog.text  # the refusal and the creation are logged...
    assert wrong not in caplog.text and token_of(backend) not in caplog.text  # ...no token


def test_the_configured_host_name_is_accepted(start_backend: StartBackend) -> None:
    backend = start_backend(LLAMASHIP_HOST="mybox.lan")
    port = port_of(backend.url)
    with backend.client() as client:
        for host, status in [
            (f"mybox.lan:{port}", 200),
            ("MyBox.LAN", 200),
            (f"localhost:{port}", 200),
            (f"other.lan:{port}", 421),
            (f"192.168.1.5:{port}", 421),
        ]:
            assert client.get("/api/health", headers={"Host": host}).status_code == status, host


def test_a_wildcard_bind_accepts_ip_addresses_but_not_names(start_backend: StartBackend) -> None:
    """Bound to every interface, the machine is reached by its IP addresses; a browser that
    uses an address cannot have been rebound to it by DNS, which needs a name."""
    backend = start_backend(LLAMASHIP_HOST="0.0.0.0")
    port = port_of(backend.url)
    with backend.client() as client:
        for host, status in [
            (f"192.168.1.5:{port}", 200),
            (f"[fe80::1]:{port}", 200),
            (f"evil.example:{port}", 421),
            (f"mybox.lan:{port}", 421),
        ]:
            assert client.get("/api/health", headers={"Host": host}).status_code == status, host
        page = {"Host": f"192.168.1.5:{port}", "Origin": f"http://192.168.1.5:{port}"}
        assert client.get("/api/health", headers=page).status_code == 200
        foreign = {"Host": f"192.168.1.5:{port}", "Origin": "http://192.168.1.6"}
        assert client.get("/api/health", headers=foreign).status_code == 403


# -- the serve command ---------------------------------------------------------------------


def test_serve_listens_on_loopback_by_default_and_creates_the_token(
    launch_backend: LaunchBackend, hardware: FakeHardware
) -> None:
    backend = launch_backend("--port", "0")
    port = backend.wait_for_port()
    backend.wait_for_line(f"llamaship: listening on http://127.0.0.1:{port}")
    token = token_path(hardware.home).read_text()
    assert stat.S_IMODE(token_path(hardware.home).stat().st_mode) == 0o600
    url = f"http://127.0.0.1:{port}/api/admin/upgrade-gpu/x"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers=admin_headers(hardware.home)).status_code == 404
    backend.process.send_signal(signal.SIGTERM)
    assert backend.wait() == 0
    assert "any machine on the network" not in backend.stderr()
    assert token not in backend.stderr()


def test_serve_on_every_interface_warns(
    launch_backend: LaunchBackend, hardware: FakeHardware
) -> None:
    backend = launch_backend("--host", "0.0.0.0", "--port", "0")
    port = backend.wait_for_port()
    backend.wait_for_line(
        "llamaship: listening on 0.0.0.0: any machine on the network can reach the API; admin "
        f"calls still need the token in {token_path(hardware.home)}"
    )
    assert httpx.get(f"http://127.0.0.1:{port}/api/health").status_code == 200
    backend.process.send_signal(signal.SIGTERM)
    assert backend.wait() == 0
    assert token_path(hardware.home).read_text() not in backend.stderr()


def test_serve_refuses_a_damaged_token_file_in_one_line(
    launch_backend: LaunchBackend, hardware: FakeHardware
) -> None:
    hardware.home.mkdir(parents=True, exist_ok=True)
    token_path(hardware.home).write_text("not a token")
    token_path(hardware.home).chmod(0o600)
    backend = launch_backend("--port", "0")
    assert backend.wait() == 2
    errors = [
        line for line in backend.stderr().splitlines() if str(token_path(hardware.home)) in line
    ]
    assert len(errors) == 1 and "64 lowercase hex characters" in errors[0], backend.stderr()
    assert "Traceback" not in backend.stderr()

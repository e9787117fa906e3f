"""`llamaship open` and the page address the server announces: the admin token in the
fragment, printed where no browser can open, never written to the log file."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from fixtures_backend import BackendProcess
from hardware.fakes import FakeHardware
from llamaship.errors import ConfigError
from llamaship.launch.log import log_file
from llamaship.settings_page import base_url, page_url, served_port
from llamaship_contract.names import ADMIN_TOKEN_NAME, ExitStatus
from terminal_kit import on_a_terminal

PAGE_LINE = re.compile(
    r"llamaship: settings page \(keep this address private\): "
    r"(http://127\.0\.0\.1:\d+)/settings#token=([0-9a-f]{64})"
)


def run_open(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llamaship", "open", *args],
        env={"LLAMASHIP_HOME": str(home), "PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_open_without_a_display_prints_the_page_address_with_the_token(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = run_open(home, LLAMASHIP_PORT="8799")
    assert result.returncode == 0, result.stderr
    token = (home / ADMIN_TOKEN_NAME).read_text()
    assert result.stdout == f"http://127.0.0.1:8799/settings#token={token}\n"


def test_open_with_port_zero_reads_the_port_file_or_says_what_to_set(tmp_path: Path) -> None:
    home = tmp_path / "home"
    refused = run_open(home, "--print", LLAMASHIP_PORT="0")
    assert refused.returncode == ExitStatus.CONFIG
    assert "set LLAMASHIP_PORT_FILE" in refused.stderr and "Traceback" not in refused.stderr
    port_file = tmp_path / "port"
    port_file.write_text("41234\n")
    result = run_open(home, "--print", LLAMASHIP_PORT="0", LLAMASHIP_PORT_FILE=str(port_file))
    assert result.stdout.startswith("http://127.0.0.1:41234/settings#token="), result.stderr


def test_addresses_of_any_address_and_ipv6_listeners() -> None:
    assert base_url("0.0.0.0", 1) == "http://127.0.0.1:1"
    assert base_url("::", 2) == "http://[::1]:2"
    assert base_url("[::1]", 3) == "http://[::1]:3"
    assert page_url("http://h:4/", "ab") == "http://h:4/settings#token=ab"
    with pytest.raises(ConfigError, match="holds no port"):
        served_port(0, Path("/dev/null"))


def test_serve_names_the_page_without_its_token_when_stderr_is_captured(
    launch_backend: Callable[..., BackendProcess], hardware: FakeHardware
) -> None:
    backend = launch_backend("--port", "0")
    port = backend.wait_for_port()
    backend.wait_for_line(
        f"llamaship: settings page: http://127.0.0.1:{port}/settings (`llamaship open` opens it)"
    )
    backend.process.send_signal(signal.SIGTERM)
    assert backend.wait() == 0
    token = (hardware.home / ADMIN_TOKEN_NAME).read_text()
    assert token not in backend.stderr()


def test_serve_on_a_terminal_prints_the_page_address_with_its_token_not_in_the_log(
    hardware: FakeHardware, tmp_path: Path
) -> None:
    env = hardware.env(LLAMASHIP_PORT="0", LLAMACPP_N_THREADS="1")
    command = [sys.executable, "-m", "llamaship_backend", "serve"]
    with on_a_terminal(command, env, tmp_path) as terminal:
        match = terminal.read_until(PAGE_LINE)
        token = (hardware.home / ADMIN_TOKEN_NAME).read_text()
        assert match[2] == token
        terminal.read_until(re.compile(f"listening on {re.escape(match[1])}"))
        terminal.process.send_signal(signal.SIGTERM)
        assert terminal.process.wait(60) == 0
    log = log_file(hardware.home).read_text()
    assert f"listening on {match[1]}" in log
    assert token not in log, "the token stays out of the log file"

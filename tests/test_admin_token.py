"""`LLAMASHIP_HOME/admin-token`: created private and whole, reused, refused or replaced when it
cannot be trusted."""

from __future__ import annotations

import logging
import os
import re
import stat
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from llamaship.admin_token import AdminTokenError, read_or_create, token_path

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def no_umask() -> Iterator[None]:
    """The most permissive umask a user can have: the mode must come from the creation call."""
    previous = os.umask(0)
    yield
    os.umask(previous)


@posix_only
@pytest.mark.usefixtures("no_umask")
def test_first_use_creates_a_private_256_bit_token(tmp_path: Path) -> None:
    home = tmp_path / "new" / "home"
    token = read_or_create(home)
    path = token_path(home)
    assert re.fullmatch(r"[0-9a-f]{64}", token)
    assert path.read_text() == token  # exactly the token: the shell reads the file as it is
    assert mode_of(path) == 0o600
    assert [entry.name for entry in home.iterdir()] == ["admin-token"]  # no temporary left


def test_the_token_stays_the_same_and_a_trailing_newline_is_accepted(tmp_path: Path) -> None:
    token = read_or_create(tmp_path)
    assert read_or_create(tmp_path) == token
    token_path(tmp_path).write_text(token + "\n")
    assert read_or_create(tmp_path) == token


def test_two_installs_have_different_tokens(tmp_path: Path) -> None:
    assert read_or_create(tmp_path / "a") != read_or_create(tmp_path / "b")


def test_processes_racing_to_create_it_all_get_the_same_token(tmp_path: Path) -> None:
    tokens: list[str] = []
    start = threading.Barrier(8)

    def create() -> None:
        start.wait()
        tokens.append(read_or_create(tmp_path))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(tokens) == 8 and len(set(tokens)) == 1
    assert token_path(tmp_path).read_text() == tokens[0]
    assert [entry.name for entry in tmp_path.iterdir()] == ["admin-token"]


@posix_only
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o666])
def test_a_token_readable_by_others_is_replaced(
    tmp_path: Path, mode: int, caplog: pytest.LogCaptureFixture
) -> None:
    old = read_or_create(tmp_path)
    token_path(tmp_path).chmod(mode)
    with caplog.at_level(logging.DEBUG):
        new = read_or_create(tmp_path)
    assert new != old
    assert mode_of(token_path(tmp_path)) == 0o600
    assert "readable by others" in caplog.text
    assert old not in caplog.text and new not in caplog.text


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"hello",
        b"0" * 63,
        b"0" * 65,
        b"A" * 64,
        b"g" * 64,
        b"\xff" * 64,
        b"0" * 32 + b" " + b"0" * 31,
    ],
)
def test_a_token_file_with_bad_content_is_refused_and_left_alone(
    tmp_path: Path, content: bytes
) -> None:
    path = token_path(tmp_path)
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(AdminTokenError, match=re.escape(str(path))) as error:
        read_or_create(tmp_path)
    assert "64 lowercase hex characters" in str(error.value)
    assert error.value.exit_code == 2
    assert path.read_bytes() == content


@posix_only
def test_a_symlink_is_refused_and_its_target_not_read(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("0" * 64)
    target.chmod(0o600)
    home = tmp_path / "home"
    home.mkdir()
    token_path(home).symlink_to(target)
    with pytest.raises(AdminTokenError, match="symbolic link"):
        read_or_create(home)
    assert target.read_text() == "0" * 64


def test_a_directory_is_refused(tmp_path: Path) -> None:
    token_path(tmp_path).mkdir()
    with pytest.raises(AdminTokenError, match="not a regular file"):
        read_or_create(tmp_path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    os.mkfifo(token_path(tmp_path), 0o600)  # opening it for reading must not wait for a writer
    errors: list[Exception] = []

    def read() -> None:
        try:
            read_or_create(tmp_path)
        except AdminTokenError as error:
            errors.append(error)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "reading the FIFO blocked"
    assert len(errors) == 1 and "not a regular file" in str(errors[0])


def test_a_home_that_is_a_file_is_one_clear_error(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.write_text("")
    with pytest.raises(AdminTokenError, match="Cannot read or create the admin token"):
        read_or_create(home)


@pytest.mark.skipif(
    sys.platform == "win32" or os.geteuid() != 0, reason="only root can give a file to another user"
)
def test_a_token_of_another_user_is_refused(tmp_path: Path) -> None:
    read_or_create(tmp_path)
    os.chown(token_path(tmp_path), 65534, 65534)
    with pytest.raises(AdminTokenError, match="belongs to another user"):
        read_or_create(tmp_path)

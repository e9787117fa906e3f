"""Every remote read is bounded in time and in bytes, local "files" may be FIFOs or devices, and
text from unverified sources is escaped: hostile servers over loopback and hostile local paths.

The servers drip headers one byte at a time, answer with compressed bombs or with terminal escape
sequences; each test asserts the read ends within its deadline with one clear error.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llamaship.io.fetch import Fetcher
from llamaship.io.http_session import DownloadLimits
from llamaship.io.transfer import DownloadError
from llamaship.overlay.select import find_overlay
from llamaship.overlay.store import OverlayStore
from llamaship.paths import DataDirs
from llamaship_contract.signing import SignatureError, verify
from llamaship_contract.textsafe import printable
from overlay_kit.child import MAXRSS_MARKER, start_installer
from overlay_kit.hostile import HostileServer, Script, answer, gzip_bomb, zstd_bomb
from overlay_kit.releases import TARGET, Keys

DEADLINE_S = 2.0
# A dripping server is cut off at the deadline; allow for a loaded CI machine.
SLACK_S = 1.0
LIMITS = DownloadLimits(
    connect_timeout_s=5.0,
    read_timeout_s=5.0,
    small_file_deadline_s=DEADLINE_S,
    deadline_grace_s=DEADLINE_S,
    min_bytes_per_second=1 << 30,
    max_attempts=3,
    retry_pause_s=0.0,
)
ARCHIVE_SIZE = 4096
ARCHIVE_SHA = "0" * 64
HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 4096\r\nX-Padding: " + b"x" * 4096 + b"\r\n\r\n"
# The most a bounded install may grow its resident memory against a bomb (issue 7 item 5).
MEMORY_BUDGET_KIB = 64 * 1024


@pytest.fixture
def hostile() -> Iterator[Callable[[Script], HostileServer]]:
    servers: list[HostileServer] = []

    def start(script: Script) -> HostileServer:
        servers.append(HostileServer(script))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _read(url: str) -> bytes:
    with Fetcher(LIMITS) as fetcher:
        return fetcher.read(url + "releases.json", max_size=1 << 20, what="release index")


def _fetch(url: str, downloads: Path) -> None:
    with Fetcher(LIMITS) as fetcher:
        fetcher.fetch(
            url + "layer.tar.zst", downloads, "layer.tar.zst", size=ARCHIVE_SIZE, sha256=ARCHIVE_SHA
        )


def _timed(action: Callable[[], object], error: type[Exception], message: str) -> float:
    started = time.monotonic()
    with pytest.raises(error, match=message):
        action()
    return time.monotonic() - started


# -- total deadlines -----------------------------------------------------------------------


@pytest.mark.parametrize("dripped", ["headers", "body"])
def test_dripping_server_is_cut_off_at_the_deadline(
    hostile: Callable[[Script], HostileServer], dripped: str
) -> None:
    """1 byte every 0.2 s never trips a per-read timeout; the 2 s total deadline ends it."""
    script = (
        Script(HEAD, step=1, pause=0.2)
        if dripped == "headers"
        else answer("200 OK", {"Content-Length": "4096"}, b"{" * 4096, step=1, pause=0.2)
    )
    server = hostile(script)
    took = _timed(lambda: _read(server.url), DownloadError, r"did not arrive within 2\.\d s")
    assert DEADLINE_S <= took < DEADLINE_S + SLACK_S


def test_archive_from_a_dripping_server_ends_at_its_deadline_and_is_deleted(
    hostile: Callable[[Script], HostileServer], tmp_path: Path
) -> None:
    server = hostile(Script(HEAD, step=1, pause=0.2))
    took = _timed(
        lambda: _fetch(server.url, tmp_path),
        DownloadError,
        r"is too slow: 0 of 4096 bytes arrived within the 2 s allowed",
    )
    assert DEADLINE_S <= took < DEADLINE_S + SLACK_S
    assert list(tmp_path.iterdir()) == []


def test_one_deadline_bounds_every_read_of_a_fetcher(
    hostile: Callable[[Script], HostileServer], tmp_path: Path, release_keys: Keys
) -> None:
    """The launch-time availability check (`Fetcher(deadline_s=...)` around `find_overlay`):
    its total is bounded, however many files it reads and however long each may take."""
    server = hostile(answer("200 OK", {"Content-Length": "100"}, b" " * 100, step=1, pause=0.1))
    limits = DownloadLimits(small_file_deadline_s=60.0)
    store = OverlayStore(DataDirs(tmp_path / "home"))
    started = time.monotonic()
    with Fetcher(limits, deadline_s=1.0) as fetcher:
        with pytest.raises(DownloadError, match=r"did not arrive within 1\.\d s"):
            find_overlay(
                server.url + "releases.json", store, TARGET, [release_keys.public], fetcher
            )
        assert time.monotonic() - started < 1.0 + SLACK_S
        with pytest.raises(DownloadError, match=r"did not arrive within 0\.0 s"):
            fetcher.read(server.url + "releases.json.sig", max_size=4096, what="signature")


# -- no decoding -----------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd", "deflate", "x-gzip"])
def test_compressed_answers_are_refused_not_decoded(
    hostile: Callable[[Script], HostileServer], tmp_path: Path, encoding: str
) -> None:
    body = zstd_bomb(64 << 20) if encoding == "zstd" else gzip_bomb(64 << 20)
    server = hostile(answer("200 OK", {"Content-Encoding": encoding}, body))
    message = f"Content-Encoding '{encoding}' although only the identity encoding"
    with pytest.raises(DownloadError, match=message):
        _read(server.url)
    with pytest.raises(DownloadError, match=message):
        _fetch(server.url, tmp_path / "downloads")
    assert list((tmp_path / "downloads").iterdir()) == []
    assert all(b"\r\naccept-encoding: identity\r\n" in head.lower() for head in server.heads)


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux")
@pytest.mark.parametrize("encoding", ["zstd", "gzip"])
def test_installer_memory_stays_bounded_against_a_compressed_bomb(
    hostile: Callable[[Script], HostileServer], tmp_path: Path, release_keys: Keys, encoding: str
) -> None:
    """A bomb (1 GiB in 32 KiB of zstd, 256 MiB in 255 KiB of gzip) as the release index: the
    installer in a child process refuses it; its peak memory stays within the 64 MiB budget (a
    client that decodes grows by 130 MiB to 2 GiB here)."""
    bomb = zstd_bomb(1 << 30) if encoding == "zstd" else gzip_bomb(256 << 20)
    server = hostile(answer("200 OK", {"Content-Encoding": encoding}, bomb))
    child = start_installer(
        tmp_path / "home", server.url + "releases.json", [release_keys.public], measure_rss=True
    )
    code, out, err = child.finish()
    assert code == DownloadError.exit_code, err
    assert "DownloadError" in out and f"Content-Encoding '{encoding}'" in out
    (line,) = [line for line in out.splitlines() if line.startswith(MAXRSS_MARKER)]
    before, after = (int(value) for value in line.split()[1:])
    print(
        f"installer peak RSS against a {len(bomb)}-byte {encoding} bomb: {before} KiB -> "
        f"{after} KiB (+{after - before} KiB)"
    )
    assert after - before < MEMORY_BUDGET_KIB


def test_body_longer_than_the_limit_is_cut_there(
    hostile: Callable[[Script], HostileServer],
) -> None:
    server = hostile(answer("200 OK", {}, b"x" * 4096, endless=True))
    with Fetcher(LIMITS) as fetcher, pytest.raises(DownloadError, match="larger than 1024 bytes"):
        fetcher.read(server.url + "releases.json", max_size=1024, what="release index")


# -- local files that are not files ----------------------------------------------------------


def _in_time(action: Callable[[], object]) -> BaseException | None:
    """Run `action` in a thread; fail if it is still running after 5 s (a FIFO open hangs)."""
    caught: list[BaseException] = []

    def run() -> None:
        try:
            action()
        except BaseException as error:  # handed to the test
            caught.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(5.0)
    assert not thread.is_alive(), "the read hangs instead of refusing the path at once"
    return caught[0] if caught else None


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("fifo", "is a FIFO"),
        ("device", "is a device"),
        ("directory", "is a directory"),
    ],
    ids=["fifo", "device", "directory"],
)
def test_local_release_files_that_are_not_files_are_refused_at_once(
    tmp_path: Path, kind: str, message: str
) -> None:
    if kind == "fifo":
        path = tmp_path / "releases.json"
        os.mkfifo(path)  # nobody writes: opening it for reading would block for ever
    elif kind == "device":
        path = Path("/dev/zero")  # endless
    else:
        path = tmp_path
    for action in (
        lambda: Fetcher(LIMITS).read(str(path), max_size=1 << 20, what="release index"),
        lambda: Fetcher(LIMITS).read(path.as_uri(), max_size=1 << 20, what="release index"),
        lambda: Fetcher(LIMITS).fetch(
            str(path), tmp_path, "x.tar.zst", size=10, sha256=ARCHIVE_SHA
        ),
    ):
        error = _in_time(action)
        assert isinstance(error, DownloadError) and message in str(error), error


# -- untrusted text is escaped -----------------------------------------------------------------

ANSI = "\x1b]0;owned\x07\x1b[2J\x1b[31mTRUSTED\x1b[0m"


def test_printable_escapes_controls_and_caps_the_length() -> None:
    assert printable(ANSI) == r"\x1b]0;owned\x07\x1b[2J\x1b[31mTRUSTED\x1b[0m"
    assert printable("a\u202egnp.exe\nforged log line\x9b31m") == (
        r"a\u202egnp.exe\x0aforged log line\x9b31m"
    )
    assert printable("ключ 🔑 ok") == "ключ 🔑 ok"
    assert printable("x" * 300, limit=10) == "x" * 10 + "... (290 more characters)"


def test_escape_sequences_in_a_signature_key_id_are_shown_escaped(release_keys: Keys) -> None:
    signature = json.dumps({"key_id": ANSI, "signature": "A" * 86 + "=="}).encode()
    with pytest.raises(SignatureError) as caught:
        verify(b"data", signature, [release_keys.public])
    assert "\x1b" not in str(caught.value) and "\x07" not in str(caught.value)
    assert r"unknown key \x1b]0;owned\x07\x1b[2J" in str(caught.value)


def test_escape_sequences_in_a_server_reason_phrase_are_shown_escaped(
    hostile: Callable[[Script], HostileServer], tmp_path: Path
) -> None:
    """HTTP parsers accept ESC and BEL in a reason phrase (anything but whitespace and NUL)."""
    server = hostile(
        Script(f"HTTP/1.1 404 Not Found{ANSI}\r\nContent-Length: 0\r\n\r\n".encode("latin-1"))
    )
    for action in (lambda: _read(server.url), lambda: _fetch(server.url, tmp_path)):
        with pytest.raises(DownloadError) as caught:
            action()
        assert "\x1b" not in str(caught.value) and "\x07" not in str(caught.value)
        assert r"answered HTTP 404 Not Found\x1b]0;owned\x07\x1b[2J" in str(caught.value)


def test_escape_sequences_in_a_content_range_are_shown_escaped(
    hostile: Callable[[Script], HostileServer], tmp_path: Path
) -> None:
    server = hostile(answer("206 Partial Content", {"Content-Range": f"bytes{ANSI}"}, b"x"))
    with pytest.raises(DownloadError, match="a partial body") as caught:
        _fetch(server.url, tmp_path)
    assert "\x1b" not in str(caught.value) and r"bytes\x1b]0;owned" in str(caught.value)

"""A command run with its stderr on a pseudo-terminal, as a person starts it in a terminal."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TerminalProcess:
    """The process and what it wrote to the terminal so far."""

    process: subprocess.Popen[bytes]
    master: int
    text: str = ""
    chunks: list[bytes] = field(default_factory=list)

    def read_until(self, pattern: re.Pattern[str], timeout: float = 120) -> re.Match[str]:
        """Read the terminal until `pattern` matches its text (fails if the process ends)."""
        deadline = time.monotonic() + timeout
        while (match := pattern.search(self.text)) is None:
            assert time.monotonic() < deadline, f"no {pattern.pattern!r} in time:\n{self.text}"
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # the process closed the terminal
                    chunk = b""
                if not chunk:
                    assert self.process.poll() is None, f"it exited early:\n{self.text}"
                self.text += chunk.decode(errors="replace")
        return match


@contextmanager
def on_a_terminal(
    command: Sequence[str], env: Mapping[str, str], cwd: Path
) -> Iterator[TerminalProcess]:
    """Run `command` with stdout and stderr on a new pseudo-terminal; stop it afterwards."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        list(command),
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    try:
        yield TerminalProcess(process, master)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        os.close(master)

"""The installer in a child process: paused at a named install step so a test can SIGKILL it
there, run under a file size limit, or measured for peak memory.

Run as a script (`python child.py ARGS_JSON`), this file sets a checkpoint callback through the
installer's Python API (`Installer(observer=...)`, `llamaship.overlay.checkpoints`) that prints
`PAUSED <step>` to stderr and waits to be killed, then calls `Installer.install`. The shipped
code reads no environment variable for any of this.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PAUSED_MARKER = "PAUSED"
MAXRSS_MARKER = "MAXRSS_KIB"


@dataclass
class InstallerChild:
    """An installer running in a child process."""

    process: subprocess.Popen[str]

    def wait_paused(self, step: str) -> None:
        """Read the child's stderr until it says it paused at `step`."""
        assert self.process.stderr is not None
        seen = []
        for line in self.process.stderr:
            seen.append(line)
            if line.strip() == f"{PAUSED_MARKER} {step}":
                return
        raise AssertionError(f"the installer ended without pausing at {step}: {''.join(seen)}")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        assert self.process.returncode == -signal.SIGKILL
        for stream in (self.process.stdout, self.process.stderr):
            assert stream is not None
            stream.close()

    def finish(self, timeout: float = 60.0) -> tuple[int, str, str]:
        out, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, out, err


def start_installer(
    home: Path,
    index: str,
    keys: Sequence[str],
    *,
    pause_at: str | None = None,
    file_size_limit: int | None = None,
    measure_rss: bool = False,
) -> InstallerChild:
    """Run `Installer.install(index, TARGET)` in a child process (the test probe).

    `measure_rss`: the child prints `MAXRSS_KIB <before> <after>`, its peak resident memory
    once everything is imported and after the install.
    """
    args = {
        "home": str(home),
        "index": index,
        "keys": list(keys),
        "pause_at": pause_at,
        "file_size_limit": file_size_limit,
        "measure_rss": measure_rss,
    }
    process = subprocess.Popen(
        [sys.executable, __file__, json.dumps(args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    return InstallerChild(process)


def _pause(step: str) -> None:
    print(PAUSED_MARKER, step, file=sys.stderr, flush=True)
    threading.Event().wait()  # until the test kills this process


def _max_rss_kib() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def _main(args: dict[str, Any]) -> int:
    import logging

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    if args["file_size_limit"]:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (args["file_size_limit"],) * 2)
    # Everything an install uses is imported before the baseline is taken.
    import anyio._backends._asyncio  # noqa: F401
    import httpx  # noqa: F401
    import zstandard  # noqa: F401

    from llamaship.overlay.install import Installer
    from llamaship.paths import DataDirs
    from llamaship_contract.errors import LlamashipError
    from overlay_kit.probe import layer_probe
    from overlay_kit.releases import FAST_OPTIONS, TARGET

    pause_at = args["pause_at"]
    before = _max_rss_kib()
    installer = Installer(
        DataDirs(Path(args["home"])),
        args["keys"],
        probe=layer_probe,
        options=FAST_OPTIONS,
        observer=lambda step: _pause(step) if step == pause_at else None,
    )
    try:
        result = installer.install(args["index"], TARGET)
    except LlamashipError as error:
        print(f"{type(error).__name__}: {error}")
        return error.exit_code
    finally:
        if args["measure_rss"]:
            print(MAXRSS_MARKER, before, _max_rss_kib())
    print(f"installed {result.overlay.overlay_version}")
    return 0


if __name__ == "__main__":
    sys.path[0] = str(Path(__file__).resolve().parent.parent)  # tests/, not tests/overlay_kit/
    sys.exit(_main(json.loads(sys.argv[1])))

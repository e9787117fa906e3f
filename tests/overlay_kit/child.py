"""The installer in a child process, optionally paused at a named step (see
`llamaship.overlay._testhook`) so a test can SIGKILL it there, or run under a file size limit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_CHILD = """
import json, logging, sys
from pathlib import Path
args = json.loads(sys.argv[1])
sys.path.insert(0, args["tests_dir"])
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
if args.get("file_size_limit"):
    import resource, signal
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (args["file_size_limit"],) * 2)
from overlay_kit.probe import import_probe
from overlay_kit.releases import FAST_OPTIONS, TARGET
from llamaship.errors import LlamashipError
from llamaship.overlay.install import Installer
from llamaship.paths import DataDirs
installer = Installer(DataDirs(Path(args["home"])), args["keys"], probe=import_probe,
                      options=FAST_OPTIONS)
try:
    result = installer.install(args["index"], TARGET)
except LlamashipError as error:
    print(f"{type(error).__name__}: {error}")
    sys.exit(error.exit_code)
print(f"installed {result.overlay.overlay_version}")
"""


@dataclass
class InstallerChild:
    """An installer running in a child process."""

    process: subprocess.Popen[str]

    def wait_paused(self, step: str) -> None:
        """Read the child's log until it says it paused at `step`."""
        assert self.process.stderr is not None
        seen = []
        for line in self.process.stderr:
            seen.append(line)
            if f"LLAMASHIP_TEST_PAUSED {step}" in line:
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


def start_installer(home: Path, index: str, keys: Sequence[str], *, pause_at: str | None = None,
                    file_size_limit: int | None = None) -> InstallerChild:
    """Run `Installer.install(index, TARGET)` in a child process (the test probe)."""
    env = {key: value for key, value in os.environ.items() if key != "LLAMASHIP_TEST_PAUSE_AT"}
    if pause_at is not None:
        env["LLAMASHIP_TEST_PAUSE_AT"] = pause_at
    args = {"home": str(home), "index": index, "keys": list(keys),
            "tests_dir": str(Path(__file__).resolve().parent.parent),
            "file_size_limit": file_size_limit}
    process = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(args)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               stdin=subprocess.DEVNULL)
    return InstallerChild(process)

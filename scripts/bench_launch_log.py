"""Warm launch time of `llamaship serve` with and without the launch log file.

    python scripts/bench_launch_log.py [--runs N]

Measures, on this machine (no GPU: the CPU build), the wall time from starting
`python -m llamaship_backend serve --port 0` until it listens (its port file appears), for warm
launches (a first launch fills the detection cache). "Without the log file" makes
`LLAMASHIP_HOME/logs` a plain file, so `launch_log.configure` cannot open the log (it then logs
to the console only); everything else is the same launch. Prints the median and the spread.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_START_TIMEOUT_S = 120.0


def launch_seconds(home: Path) -> float:
    """One launch until it listens, then stopped with SIGTERM."""
    port_file = home / "port"
    port_file.unlink(missing_ok=True)
    env = {
        **os.environ,
        "LLAMASHIP_HOME": str(home),
        "LLAMASHIP_PORT_FILE": str(port_file),
        "LLAMACPP_N_THREADS": "1",
    }
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "llamaship_backend", "serve", "--port", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        while not port_file.exists():
            if process.poll() is not None or time.perf_counter() - started > _START_TIMEOUT_S:
                msg = f"the launch in {home} ended or hung (exit {process.returncode})"
                raise SystemExit(msg)
            time.sleep(0.005)
        return time.perf_counter() - started
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory(prefix="llamaship-bench-") as scratch:
        with_log, without_log = Path(scratch, "with-log"), Path(scratch, "without-log")
        for home in (with_log, without_log):
            home.mkdir()
        (without_log / "logs").write_text("not a folder: no log file for this home\n")
        samples: dict[str, list[float]] = {"with log file": [], "without log file": []}
        for home in (with_log, without_log):
            launch_seconds(home)  # cold: fills the detection cache
        for _ in range(runs):  # interleaved, so both see the same machine load
            samples["with log file"].append(launch_seconds(with_log))
            samples["without log file"].append(launch_seconds(without_log))
        assert (with_log / "logs" / "llamaship.log").stat().st_size > 0
    for name, values in samples.items():
        print(
            f"{name:18} median {statistics.median(values) * 1000:7.1f} ms  "
            f"(min {min(values) * 1000:.1f}, max {max(values) * 1000:.1f}, {runs} runs)"
        )


if __name__ == "__main__":
    main()

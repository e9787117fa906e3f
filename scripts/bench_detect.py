"""Benchmark GPU detection on the fake NVIDIA driver of the tests (no GPU needed).

    python scripts/bench_detect.py [--runs N]

Prints: cold detection through NVML (the real nvidia-ml-py code on the fake libnvidia-ml.so.1),
the warm launch path (`load_or_detect` served from the cache) and the wall time of a hung
nvidia-smi with a 1 s timeout (it should stay within timeout + 0.5 s). The script compiles the
fake library, then re-executes itself with LD_LIBRARY_PATH pointing at it (the loader reads
LD_LIBRARY_PATH only at process start).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
# The tests' fakes are importable only once their folder is on the path.
from hardware.fakes import GTX_1060, RTX_3060, compile_fake_nvml, write_fake_smi  # noqa: E402

_CHILD_MARKER = "BENCH_DETECT_CHILD"
_HANG_TIMEOUT_S = 1.0


def _median_ms(action: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def _measure(runs: int) -> list[tuple[str, str]]:
    import llamaship
    from llamaship.config import resolve_settings
    from llamaship.detect import detect_gpus, load_or_detect
    from llamaship.paths import DataDirs

    rows: list[tuple[str, str]] = []
    start = time.perf_counter()
    first = detect_gpus(5.0)
    rows.append(
        (
            "first detection in the process (imports nvidia-ml-py, loads the library)",
            f"{(time.perf_counter() - start) * 1000:.2f} ms",
        )
    )
    assert first.source == "nvml", first
    rows.append(
        (
            f"cold detection via NVML, {len(first.gpus)} GPUs (median of {runs})",
            f"{_median_ms(lambda: detect_gpus(5.0), runs):.3f} ms",
        )
    )

    settings = resolve_settings(env=os.environ)
    dirs = DataDirs(settings.home)
    versions = {"bundle": llamaship.__version__}
    load_or_detect(settings, dirs, versions, refresh=True)  # writes the cache
    assert load_or_detect(settings, dirs, versions).cached is True
    rows.append(
        (
            f"warm load_or_detect from the cache (median of {runs})",
            f"{_median_ms(lambda: load_or_detect(settings, dirs, versions), runs):.3f} ms",
        )
    )

    os.environ["FAKE_NVML_FAIL"] = "nvmlInitWithFlags:9"
    os.environ["FAKE_SMI_MODE"] = "hang"
    start = time.perf_counter()
    hung = detect_gpus(_HANG_TIMEOUT_S)
    elapsed = time.perf_counter() - start
    assert hung.source == "none", hung
    bound = _HANG_TIMEOUT_S + 0.5
    rows.append(
        (f"hung nvidia-smi, timeout {_HANG_TIMEOUT_S:g} s (bound {bound:g} s)", f"{elapsed:.3f} s")
    )
    return rows


def _print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(label) for label, _ in rows)
    print(f"{'measurement'.ljust(width)}  value")
    print(f"{'-' * width}  {'-' * 12}")
    for label, value in rows:
        print(f"{label.ljust(width)}  {value}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="samples per median")
    args = parser.parse_args()
    if os.environ.get(_CHILD_MARKER):
        _print_table(_measure(args.runs))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-detect-") as temporary:
        root = Path(temporary)
        library = compile_fake_nvml(root / "lib")
        write_fake_smi(root / "bin")
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("LLAMASHIP_", "FAKE_", "GPU_DETECTION_"))
        }
        env.update(
            {
                _CHILD_MARKER: "1",
                "LD_LIBRARY_PATH": str(library.parent),
                "PATH": str(root / "bin"),
                "LLAMASHIP_HOME": str(root / "home"),
                "FAKE_GPUS": f"{RTX_3060.spec()};{GTX_1060.spec()}",
                "FAKE_SMI_PIDFILE": str(root / "smi.pids"),
            }
        )
        return subprocess.run(
            [sys.executable, __file__, "--runs", str(args.runs)], env=env, check=False
        ).returncode


if __name__ == "__main__":
    raise SystemExit(main())

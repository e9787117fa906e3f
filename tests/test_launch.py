"""Boot counting, the launch status and the launch log, with real processes that crash, get
killed or stop on SIGTERM (the launch machinery, without llama.cpp: `test_bootstrap.py` runs
the whole `serve`)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from logging.handlers import RotatingFileHandler
from pathlib import Path

import pytest

from llamaship.config import resolve_settings
from llamaship.launch import boot_counting
from llamaship.launch import log as launch_log
from llamaship.launch.boot_counting import ProcessIdentity, assess, is_running
from llamaship.launch.outcome import BootState
from llamaship.launch.plan import other_build
from llamaship.launch.probe_record import ensure_probed, read_record
from llamaship.launch.status import LaunchTracker, read_status
from llamaship.overlay.store import OverlayStore
from llamaship.paths import DataDirs
from llamaship_backend.cli import main
from llamaship_contract.detection import none_report

VERSION = "0.3.36-cu13.0-1"
# One launch of the overlay VERSION, doing what argv[2] says, as `cli_serve` runs a launch.
CHILD = r"""
import os, signal, sys, time
from pathlib import Path
from llamaship.launch.status import LaunchTracker, run_launch
from llamaship.paths import DataDirs

home, action = Path(sys.argv[1]), sys.argv[2]
tracker = LaunchTracker(DataDirs(home))

def launch():
    tracker.counting(sys.argv[3])
    tracker.explain(decision="cuda", reason="the overlay fits", upgrade_available=False,
                    variant="cuda", overlay_version=sys.argv[3], llama_cpp_version="0.3.36",
                    events=["an event"], tries_left=None)
    if action == "crash-booting":
        os.abort()
    if action == "wait-booting":
        print("booting", flush=True)
        time.sleep(60)
    tracker.serving()
    if action == "wait-serving":
        print("serving", flush=True)
        time.sleep(60)
    if action == "kill-serving":
        os.kill(os.getpid(), signal.SIGKILL)
    with tracker.loading(home / "model.gguf", {"n_gpu_layers": -1, "n_ctx": 4096}):
        if action == "crash-loading":
            os.abort()
    tracker.generated()
    if action == "kill-healthy":
        os.kill(os.getpid(), signal.SIGKILL)
    return 0

sys.exit(run_launch(tracker, launch))
"""


def launch(home: Path, action: str, version: str = VERSION) -> subprocess.CompletedProcess[str]:
    """One launch in a child process, run to its end (crash, kill or exit)."""
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(home), action, version],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def dirs(tmp_path: Path) -> DataDirs:
    return DataDirs(tmp_path / "home")


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    """Child processes a test starts; killed at its end."""
    children: list[subprocess.Popen[str]] = []
    yield children
    for child in children:
        if child.poll() is None:
            child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()


def start(home: Path, action: str, children: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    """A launch in a child process, returned once it says it reached its phase."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(home), action, VERSION], stdout=subprocess.PIPE, text=True
    )
    children.append(child)
    assert child.stdout is not None
    assert child.stdout.readline().strip() in ("booting", "serving")
    return child


def next_launch(dirs: DataDirs) -> boot_counting.Assessment:
    return assess(dirs, VERSION, boot_counting.current_process())


# --- process liveness -----------------------------------------------------------------------


def test_a_running_process_is_alive_and_an_ended_one_is_not() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        import psutil

        identity = ProcessIdentity(child.pid, psutil.Process(child.pid).create_time())
        assert is_running(identity)
        assert not is_running(ProcessIdentity(child.pid, identity.create_time - 100.0)), (
            "a reused pid (another creation time) is another process"
        )
    finally:
        child.kill()
        child.wait()
    assert not is_running(identity)


def test_liveness_never_signals_a_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """On Windows `os.kill(pid, 0)` terminates the process: the check must not call it."""

    def no_kill(pid: int, sig: int) -> None:
        raise AssertionError(f"os.kill({pid}, {sig}) called by the liveness check")

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        import psutil

        identity = ProcessIdentity(child.pid, psutil.Process(child.pid).create_time())
        monkeypatch.setattr(os, "kill", no_kill)
        assert is_running(identity)
        assert is_running(boot_counting.current_process())
    finally:
        monkeypatch.undo()
        child.kill()
        child.wait()
    monkeypatch.setattr(os, "kill", no_kill)
    assert not is_running(identity)


# --- boot counting --------------------------------------------------------------------------


def test_one_crash_leaves_a_try_and_two_in_a_row_quarantine(dirs: DataDirs) -> None:
    assert launch(dirs.home, "crash-booting").returncode == -signal.SIGABRT
    first = next_launch(dirs)
    assert not first.quarantine and first.count.tries_left == 1
    assert [launch.phase for launch in first.counted] == ["booting"]
    assert next_launch(dirs).counted == (), "a launch is counted once"

    assert launch(dirs.home, "crash-booting").returncode == -signal.SIGABRT
    second = next_launch(dirs)
    assert second.quarantine and second.count.tries_left == 0


def test_a_crash_while_loading_counts_and_names_the_model(dirs: DataDirs) -> None:
    assert launch(dirs.home, "crash-loading").returncode == -signal.SIGABRT
    assessment = next_launch(dirs)
    (failed,) = assessment.counted
    assert failed.phase == "loading" and failed.plan == {"n_gpu_layers": -1, "n_ctx": 4096}
    assert assessment.count.tries_left == 1
    state = BootState(
        settings=resolve_settings(env={"LLAMASHIP_HOME": str(dirs.home)}),
        dirs=dirs,
        report=none_report(),
        decision="cuda",
        reason="",
        upgrade_available=False,
        active_variant="cuda",
        overlay_version=VERSION,
        llama_cpp_version="0.3.36",
        llama_cpp_path=Path("x"),
        gpu_offload=True,
        n_gpu_layers=-1,
        n_threads=1,
        last_failure=assessment.count.last_failure,
    )
    assert state.previous_load_failure(dirs.home / "model.gguf") == failed
    assert state.previous_load_failure(dirs.home / "other.gguf") is None


@pytest.mark.parametrize("phase", ["wait-booting", "wait-serving"])
def test_a_launch_stopped_by_sigterm_is_not_counted(
    dirs: DataDirs, started: list[subprocess.Popen[str]], phase: str
) -> None:
    child = start(dirs.home, phase, started)
    child.send_signal(signal.SIGTERM)
    assert child.wait(30) == 0
    assessment = next_launch(dirs)
    assert assessment.counted == () and assessment.count.tries_left == 2
    assert assessment.count.running == ()
    status = read_status(dirs)
    assert status is not None and status.process.phase == "ended-by-signal"


def test_a_launch_that_never_loaded_a_model_neither_proves_nor_condemns(dirs: DataDirs) -> None:
    assert launch(dirs.home, "crash-loading").returncode == -signal.SIGABRT
    assert launch(dirs.home, "kill-serving").returncode == -signal.SIGKILL
    assessment = next_launch(dirs)
    assert [failed.phase for failed in assessment.counted] == ["loading"]
    assert assessment.count.tries_left == 1
    assert assessment.count.last_failure is not None  # still known: no launch proved it since


def test_a_healthy_launch_gives_every_try_back(dirs: DataDirs) -> None:
    assert launch(dirs.home, "crash-loading").returncode == -signal.SIGABRT
    assert next_launch(dirs).count.tries_left == 1
    assert launch(dirs.home, "kill-healthy").returncode == -signal.SIGKILL
    assessment = next_launch(dirs)
    assert assessment.counted == ()  # killed after it was healthy: not a failure
    assert assessment.count.tries_left == 2 and assessment.count.last_failure is None


def test_a_running_launch_is_left_alone(
    dirs: DataDirs, started: list[subprocess.Popen[str]]
) -> None:
    child = start(dirs.home, "wait-booting", started)
    assessment = next_launch(dirs)
    assert assessment.counted == ()
    assert [launch.pid for launch in assessment.count.running] == [child.pid]


def test_the_record_of_this_process_before_an_exec_restart_is_not_counted(dirs: DataDirs) -> None:
    me = boot_counting.current_process()
    boot_counting.record_phase(dirs, VERSION, boot_counting.new_launch(me, "loading"))
    assessment = assess(dirs, VERSION, me)
    assert assessment.counted == () and assessment.count.running == ()


def test_unreadable_boot_count_starts_afresh(dirs: DataDirs) -> None:
    path = boot_counting.count_file(dirs, VERSION)
    path.parent.mkdir(parents=True)
    path.write_text('{"schema": 1, "tries_left": "many"')
    assert next_launch(dirs).count.tries_left == boot_counting.BOOT_TRIES
    assert boot_counting.count_file(dirs, "../../evil").parent == path.parent


# --- the launch status and `llamaship status` -----------------------------------------------


def run_status(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str
) -> str:
    monkeypatch.setenv("LLAMASHIP_HOME", str(home))
    assert main(["status", *args]) == 0
    return capsys.readouterr().out


def test_status_shows_the_last_launch_as_it_recorded_itself(
    dirs: DataDirs, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "No launch recorded yet" in run_status(dirs.home, capsys, monkeypatch)
    assert launch(dirs.home, "crash-loading").returncode == -signal.SIGABRT
    text = run_status(dirs.home, capsys, monkeypatch)
    assert "decision:     cuda: the overlay fits" in text
    assert f"running:      cuda, llama.cpp 0.3.36, overlay {VERSION}" in text
    assert "died while loading its first model" in text
    assert "  - an event" in text
    reply = json.loads(run_status(dirs.home, capsys, monkeypatch, "--json"))
    assert reply["running"] is False
    assert reply["launch"]["process"]["phase"] == "loading"
    assert reply["launch"]["reason"] == "the overlay fits"


def test_status_escapes_what_the_launch_wrote(
    dirs: DataDirs, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker = LaunchTracker(dirs)
    tracker.explain(
        decision="cpu",
        reason="server said \x1b[2Jgone",
        upgrade_available=False,
        variant="cpu",
        overlay_version=None,
        llama_cpp_version="0.3.36",
        events=["line one\nforged line"],
        tries_left=None,
    )
    text = run_status(dirs.home, capsys, monkeypatch)
    assert "\x1b" not in text and "\nforged line" not in text
    assert "(running, pid" in text


def test_a_broken_status_file_is_one_line_naming_it(
    dirs: DataDirs, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    dirs.state.mkdir(parents=True)
    (dirs.state / "last-launch.json").write_text("{}")
    monkeypatch.setenv("LLAMASHIP_HOME", str(dirs.home))
    assert main(["status"]) != 0
    error = capsys.readouterr().err
    assert "last-launch.json" in error and "Traceback" not in error
    assert len(error.strip().splitlines()) == 1


# --- the probe record -----------------------------------------------------------------------


def test_the_launch_after_an_install_does_not_probe_again(v1_active: DataDirs) -> None:
    record = read_record(v1_active)
    assert record is not None and record.by == "install"
    installed = OverlayStore(v1_active).active()
    assert installed is not None

    def probe_again(module: Path, runtime_lib_dir: Path, timeout: float) -> None:
        raise AssertionError("the overlay was probed again")

    assert ensure_probed(installed, v1_active, probe_again) == record


def test_an_overlay_made_for_another_llama_cpp_is_not_used(v1_active: DataDirs) -> None:
    """Its module cannot load into this bundle's ggml (another compile): the launch and
    `llamaship fit` set it aside, saying so, until the matching overlay is installed."""
    installed = OverlayStore(v1_active).active()
    assert installed is not None and other_build(installed) is None
    older = installed.record.model_copy(update={"llama_cpp_version": "0.3.35"})
    reason = other_build(dataclasses.replace(installed, record=older))
    assert reason == (
        f"CUDA overlay {installed.overlay_version} was made for llama-cpp-python 0.3.35, this "
        f"bundle runs {installed.llama_cpp_version}: it is not used until the overlay for this "
        "version is installed"
    )
    assert other_build(None) is None


# --- the launch log -------------------------------------------------------------------------


@pytest.fixture
def root_handlers() -> Iterator[None]:
    """Remove the handlers a test adds to the root logger."""
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    yield
    for handler in root.handlers[:]:
        if handler not in before:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


@pytest.mark.usefixtures("root_handlers")
def test_the_log_file_is_written_and_bounded(tmp_path: Path) -> None:
    path = launch_log.configure(tmp_path, max_bytes=4096, backups=2)
    assert path == tmp_path / "logs" / "llamaship.log"
    assert launch_log.configure(tmp_path, max_bytes=4096, backups=2) == path  # once only
    handlers = [
        handler
        for handler in logging.getLogger().handlers
        if isinstance(handler, RotatingFileHandler)
    ]
    assert len(handlers) == 1
    log = logging.getLogger("llamaship.launch.bootstrap")
    log.info("decision: cpu: no NVIDIA GPU detected")
    for number in range(400):
        log.info("event %d %s", number, "x" * 40)
    files = sorted(path.parent.iterdir())
    assert [file.name for file in files] == ["llamaship.log", "llamaship.log.1", "llamaship.log.2"]
    assert all(file.stat().st_size <= 4096 for file in files)
    assert "event 399" in path.read_text()


@pytest.mark.usefixtures("root_handlers")
def test_an_unwritable_log_directory_does_not_stop_the_launch(tmp_path: Path) -> None:
    (tmp_path / "logs").write_text("a file where the folder should be")
    assert launch_log.configure(tmp_path) is None


def test_warm_launch_overhead_of_the_log_file_is_small(tmp_path: Path) -> None:
    """The decision's lines with and without the file handler (numbers in the report)."""
    code = (
        "import sys, time, logging; from pathlib import Path\n"
        "from llamaship.launch import log as launch_log\n"
        "started = time.perf_counter()\n"
        "launch_log.configure(Path(sys.argv[1]), to_file=sys.argv[2] == '1')\n"
        "for n in range(20): logging.getLogger('llamaship.launch.bootstrap').info('event %d', n)\n"
        "print(time.perf_counter() - started)"
    )
    timings = {}
    for to_file in ("0", "1"):
        runs = [
            float(
                subprocess.run(
                    [sys.executable, "-c", code, str(tmp_path), to_file],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )
            for _ in range(3)
        ]
        timings[to_file] = min(runs)
    assert timings["1"] - timings["0"] < 0.05, timings


def test_auto_upgrade_download_progress_is_logged_every_ten_percent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from llamaship.overlay.install import InstallProgress

    progress = launch_log.InstallProgressLog()
    total = 10_000_000
    with caplog.at_level(logging.INFO, logger="llamaship.launch.log"):
        progress(InstallProgress("index", 0, 0, "reading the release index"))
        for done in range(0, total + 1, 65_536):
            progress(InstallProgress("download", done, total, "fetching llama-cuda.tar.zst"))
        progress(InstallProgress("download", total, total, "fetching llama-cuda.tar.zst"))
        progress(InstallProgress("done", total, total, "overlay 1 is active"))
    lines = [record.getMessage() for record in caplog.records]
    percents = [line.split()[2] for line in lines if "downloaded" in line]
    assert percents == [str(step) for step in range(0, 101, 10)]
    assert lines.count("AUTO_UPGRADE_GPU: fetching llama-cuda.tar.zst") == 1
    assert lines[0] == "AUTO_UPGRADE_GPU: reading the release index"
    assert lines[-1] == "AUTO_UPGRADE_GPU: overlay 1 is active"

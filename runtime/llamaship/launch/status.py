"""This launch's phase, written where the next launch and `llamaship status` read it.

A `LaunchTracker` follows one launch: booting -> serving (listening) -> loading (the first model
load and first token) -> healthy, or ended-by-signal / ended. Each change is written to the
active overlay's boot count (`llamaship.launch.boot_counting`) and to `state/last-launch.json` (a
`LaunchStatus`: the decision, its reason and events, and the phase), so a launch that dies
leaves its last phase behind. It is the `LaunchHealth` hook the engine calls.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from llamaship.io.fs import atomic_write_bytes
from llamaship.launch import boot_counting
from llamaship.launch.boot_counting import ProcessIdentity
from llamaship.launch.log import CONSOLE_SKIPS
from llamaship.paths import DataDirs
from llamaship_contract.document import dump_document_pretty, parse_document
from llamaship_contract.errors import ContractError, LlamashipError
from llamaship_contract.launch import LaunchPhase, LaunchStatus
from llamaship_contract.names import ExitStatus

_log = logging.getLogger(__name__)
STATUS_FILE = "last-launch.json"
STATUS_LOCK_TIMEOUT_S = 10.0


def status_path(dirs: DataDirs) -> Path:
    return dirs.state / STATUS_FILE


class StatusUnreadable(LlamashipError):
    """The launch status file cannot be read or is not a launch status."""

    exit_code = ExitStatus.DOCUMENT_INVALID


def read_status(dirs: DataDirs) -> LaunchStatus | None:
    """The last launch's status as it wrote it; None when no launch wrote one yet.

    Raises `StatusUnreadable` (naming the file) when it is unreadable or not a valid status."""
    path = status_path(dirs)
    try:
        return parse_document(LaunchStatus, path.read_bytes(), str(path))
    except FileNotFoundError:
        return None
    except OSError as error:
        msg = (
            f"cannot read {path} ({error.strerror or error}); the next `llamaship serve` "
            "writes it again"
        )
        raise StatusUnreadable(msg) from None
    except ContractError as error:
        msg = f"{error}; the next `llamaship serve` writes it again"
        raise StatusUnreadable(msg) from None


class LaunchTracker:
    """One launch's phase and explanation; thread-safe (the engine calls it from workers)."""

    def __init__(
        self, dirs: DataDirs, me: ProcessIdentity | None = None, log_file: Path | None = None
    ) -> None:
        self._dirs = dirs
        self._me = me or boot_counting.current_process()
        self._log_file = log_file
        self._lock = threading.Lock()
        self._launch = boot_counting.new_launch(self._me)
        self._overlay: str | None = None
        self._status: LaunchStatus | None = None

    @property
    def me(self) -> ProcessIdentity:
        return self._me

    @property
    def phase(self) -> LaunchPhase:
        return self._launch.phase

    def counting(self, overlay_version: str | None) -> None:
        """From now on this launch runs (or stops running) `overlay_version`'s code."""
        with self._lock:
            if self._overlay is not None and self._overlay != overlay_version:
                boot_counting.record_end(self._dirs, self._overlay, self._launch)
            self._overlay = overlay_version
            if overlay_version is not None:
                boot_counting.record_phase(self._dirs, overlay_version, self._launch)

    def explain(
        self,
        *,
        decision: str,
        reason: str,
        upgrade_available: bool,
        variant: str | None,
        overlay_version: str | None,
        llama_cpp_version: str | None,
        events: list[str],
        tries_left: int | None,
    ) -> None:
        """Write what this launch decided (again once llama.cpp is imported)."""
        with self._lock:
            self._status = LaunchStatus.model_validate(
                {
                    "process": self._launch,
                    "decision": decision,
                    "reason": reason,
                    "upgrade_available": upgrade_available,
                    "variant": variant,
                    "overlay_version": overlay_version,
                    "llama_cpp_version": llama_cpp_version,
                    "events": tuple(events),
                    "tries_left": tries_left,
                    "updated": datetime.now(UTC),
                    "log_file": str(self._log_file) if self._log_file else None,
                }
            )
            self._write_status()

    def _write_status(self) -> None:
        """Write the status unless a launch that started later wrote its own (call locked)."""
        from filelock import FileLock

        if self._status is None:
            return
        path = status_path(self._dirs)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._status = self._status.model_copy(
            update={"process": self._launch, "updated": datetime.now(UTC)}
        )
        with FileLock(f"{path}.lock", timeout=STATUS_LOCK_TIMEOUT_S):
            try:
                current = read_status(self._dirs)
            except StatusUnreadable:
                current = None
            if (
                current is not None
                and current.process.started > self._launch.started
                and (
                    boot_counting.is_running(
                        ProcessIdentity(current.process.pid, current.process.create_time)
                    )
                )
            ):
                return  # a newer launch is running: it is the last launch now
            atomic_write_bytes(path, dump_document_pretty(self._status))

    def _set(self, phase: LaunchPhase, quiet: bool = False, **changes: Any) -> None:
        """Move to `phase` (call locked): boot count first, then the status file (`quiet`:
        logged to the file only, the command prints its error line last)."""
        if phase == self._launch.phase and not changes:
            return
        self._launch = self._launch.model_copy(update={"phase": phase, **changes})
        if self._overlay is not None:
            if phase in ("ended", "ended-by-signal"):
                boot_counting.record_end(self._dirs, self._overlay, self._launch)
            else:
                boot_counting.record_phase(self._dirs, self._overlay, self._launch)
        self._write_status()
        _log.info(
            "launch phase: %s%s",
            phase,
            f" ({self._launch.model})" if phase == "loading" else "",
            extra={CONSOLE_SKIPS: quiet},
        )

    def serving(self) -> None:
        """The server listens; until a model loads, the launch neither proves nor condemns."""
        with self._lock:
            if self._launch.phase == "booting":
                self._set("serving")

    @contextmanager
    def loading(self, model: Path, plan: Mapping[str, Any] | None = None) -> Iterator[None]:
        """Around a model load before the launch is healthy: a crash inside counts; an
        exception means the process lives on (the load failed), so it does not."""
        with self._lock:
            counting = self._launch.phase != "healthy"
            if counting:
                self._set(
                    "loading", model=str(model), plan=dict(plan) if plan is not None else None
                )
        try:
            yield
        except BaseException:
            with self._lock:
                if counting and self._launch.phase == "loading":
                    self._set("serving", model=None, plan=None)
            raise

    def generated(self) -> None:
        """A token was generated on the active variant: the launch is healthy."""
        if self._launch.phase == "healthy":
            return
        with self._lock:
            if self._launch.phase not in ("healthy", "ended", "ended-by-signal"):
                self._set("healthy")

    def ended(self, *, by_signal: bool) -> None:
        """The launch ends without a crash (a signal, a restart or an error exit)."""
        with self._lock:
            self._set("ended-by-signal" if by_signal else "ended")

    def failed(self, error: str) -> None:
        """The launch ends with `error` (the line the command prints): logged to the log file
        and written to the status, also when the launch failed before it decided anything."""
        with self._lock:
            if self._status is None:
                self._status = LaunchStatus.model_validate(
                    {
                        "process": self._launch,
                        "decision": "cpu",
                        "reason": "the launch failed before it chose a build",
                        "upgrade_available": False,
                        "variant": None,
                        "overlay_version": None,
                        "llama_cpp_version": None,
                        "updated": datetime.now(UTC),
                        "log_file": str(self._log_file) if self._log_file else None,
                    }
                )
            self._status = self._status.model_copy(update={"error": error})
            self._set("ended", quiet=True)
        _log.error("launch failed: %s", error, extra={CONSOLE_SKIPS: True})


class StopRequested(KeyboardInterrupt):
    """SIGTERM arrived while the launch was booting."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise StopRequested(signal.Signals(signum).name)


@contextmanager
def signals_stop_the_launch() -> Iterator[None]:
    """SIGTERM raises `StopRequested` (SIGINT already raises KeyboardInterrupt) while booting,
    so a launch stopped early ends cleanly instead of looking like a crash. A launch hung in
    native code does not run the handler: killing it then counts, as a hang should."""
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_launch(tracker: LaunchTracker, body: Callable[[], int]) -> int:
    """Run `body` (boot, then serve) as the launch `tracker` follows, and record how it ended.

    `body` returns the exit status, 0 when SIGTERM or SIGINT stopped it (the server's way). A
    signal while booting stops it too (exit 0). The end is recorded unless the process dies:
    then the next launch finds its last phase (boot counting)."""
    by_signal = False
    failure: str | None = None
    try:
        with signals_stop_the_launch():
            status = body()
        by_signal = status == 0
        return status
    except KeyboardInterrupt:  # SIGINT, or SIGTERM as StopRequested, while booting
        by_signal = True
        return 0
    except Exception as error:  # recorded, then the command prints it and exits
        failure = str(error) if isinstance(error, LlamashipError) else _describe(error)
        raise
    finally:
        if failure is None:
            tracker.ended(by_signal=by_signal)
        else:
            tracker.failed(failure)


def _describe(error: BaseException) -> str:
    """An unexpected error in one line: its type and message."""
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__

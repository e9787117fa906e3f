"""Background overlay upgrades for the API: one running job at a time, progress by job id.

`get(job_id)` returns {"id", "state": "running|succeeded|failed", "phase":
"index|download|verify|extract|probe|activate|done", "bytes_done", "bytes_total" (archive bytes
over all layers fetched), "message", "restart_required"}; `restart_required` is true when the
overlay now active differs from the one the running app booted with.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from llamaship.errors import LlamashipError
from llamaship.overlay.install import InstallProgress, InstallResult, Phase, ProgressFn

_log = logging.getLogger(__name__)

JobState = Literal["running", "succeeded", "failed"]
UpgradeWork = Callable[[ProgressFn], InstallResult]
"""Runs one install, reporting progress; e.g. `Installer(...).install` bound to its arguments."""

_KEPT_JOBS = 16


@dataclass
class _Job:
    id: str
    state: JobState = "running"
    phase: Phase = "index"
    bytes_done: int = 0
    bytes_total: int = 0
    message: str = "starting"
    restart_required: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "phase": self.phase,
            "bytes_done": self.bytes_done,
            "bytes_total": self.bytes_total,
            "message": self.message,
            "restart_required": self.restart_required,
        }


class UpgradeJobs:
    """Runs upgrades in daemon threads; keeps the last few jobs' outcomes for polling."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}
        self._running: str | None = None
        self._threads: dict[str, threading.Thread] = {}

    def start(self, work: UpgradeWork, running_overlay_version: str | None = None) -> str:
        """Start `work` in the background and return its job id; while a job runs, starting
        another returns the running job's id instead. `running_overlay_version`: the overlay
        the app runs with now (None: CPU)."""
        with self._lock:
            if self._running is not None:
                return self._running
            job = _Job(id=uuid.uuid4().hex)
            self._jobs[job.id] = job
            self._running = job.id
            for old in list(self._jobs)[:-_KEPT_JOBS]:
                del self._jobs[old]
                self._threads.pop(old, None)
            thread = threading.Thread(
                target=self._run,
                args=(job, work, running_overlay_version),
                name=f"overlay-upgrade-{job.id[:8]}",
                daemon=True,
            )
            self._threads[job.id] = thread
        thread.start()
        return job.id

    def get(self, job_id: str) -> dict[str, Any] | None:
        """The job's progress (see the module docstring), or None for an unknown id."""
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None else job.as_dict()

    def wait(self, job_id: str, timeout: float | None = None) -> Mapping[str, Any] | None:
        """Block until the job ends (or `timeout` passes); its progress. For tests and shutdown."""
        with self._lock:
            thread = self._threads.get(job_id)
        if thread is not None:
            thread.join(timeout)
        return self.get(job_id)

    def _update(self, job: _Job, progress: InstallProgress) -> None:
        with self._lock:
            job.phase = progress.phase
            job.bytes_done = progress.bytes_done
            job.bytes_total = progress.bytes_total
            job.message = progress.message

    def _run(self, job: _Job, work: UpgradeWork, running_overlay_version: str | None) -> None:
        try:
            result = work(lambda progress: self._update(job, progress))
        except LlamashipError as error:
            self._finish(job, "failed", str(error), restart_required=False)
        except Exception as error:  # a thread has no caller to raise to
            _log.exception("overlay upgrade job %s crashed", job.id)
            self._finish(
                job,
                "failed",
                f"internal error: {type(error).__name__}: {error}",
                restart_required=False,
            )
        else:
            version = result.overlay.overlay_version
            restart = version != running_overlay_version
            message = (
                f"overlay {version} is installed"
                if result.changed
                else f"overlay {version} was already installed"
            )
            if restart:
                message += "; restart the app to use it"
            self._finish(job, "succeeded", message, restart_required=restart)

    def _finish(self, job: _Job, state: JobState, message: str, *, restart_required: bool) -> None:
        with self._lock:
            job.state = state
            job.message = message
            job.restart_required = restart_required
            if state == "succeeded":
                job.phase = "done"
            self._running = None

"""Background overlay upgrades for the API: one running job at a time, progress by job id.

`get(job_id)` returns {"id", "state": "running|succeeded|failed", "phase":
"index|download|verify|extract|probe|activate|done", "bytes_done", "bytes_total" (archive bytes
over all layers fetched), "message", "restart_required"}; `restart_required` is true when the
overlay now active differs from the one the running app booted with.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from llamaship.jobs import JobBoard, JobState
from llamaship.overlay.best import BestInstall
from llamaship.overlay.install import InstallProgress, Phase, ProgressFn

UpgradeWork = Callable[[ProgressFn], BestInstall]
"""Runs one install, reporting progress; e.g. `install_best` bound to its arguments."""


@dataclass
class _Job:
    id: str
    state: JobState = "running"
    phase: Phase = "index"
    bytes_done: int = 0
    bytes_total: int = 0
    message: str = "starting"
    restart_required: bool = False


class UpgradeJobs:
    """Runs upgrades in daemon threads; keeps the last few jobs' outcomes for polling."""

    def __init__(self) -> None:
        self._board = JobBoard[_Job]("overlay-upgrade")

    def start(self, work: UpgradeWork, running_overlay_version: str | None = None) -> str:
        """Start `work` in the background and return its job id; while a job runs, starting
        another returns the running job's id instead. `running_overlay_version`: the overlay
        the app runs with now (None: CPU)."""
        return self._board.start(
            "upgrade",
            lambda: _Job(id=uuid.uuid4().hex),
            lambda job: self._upgrade(job, work, running_overlay_version),
        )

    def get(self, job_id: str) -> dict[str, Any] | None:
        """The job's progress (see the module docstring), or None for an unknown id."""
        return self._board.get(job_id)

    def wait(self, job_id: str, timeout: float | None = None) -> Mapping[str, Any] | None:
        """Block until the job ends (or `timeout` passes); its progress. For tests and shutdown."""
        return self._board.wait(job_id, timeout)

    def _upgrade(self, job: _Job, work: UpgradeWork, running_overlay_version: str | None) -> str:
        def progress(report: InstallProgress) -> None:
            def change(job: _Job) -> None:
                job.phase = report.phase
                job.bytes_done = report.bytes_done
                job.bytes_total = report.bytes_total
                job.message = report.message

            self._board.update(job, change)

        result = work(progress)
        version = result.overlay_version
        restart = version != running_overlay_version

        def done(job: _Job) -> None:
            job.phase = "done"
            job.restart_required = restart

        self._board.update(job, done)
        message = (
            f"overlay {version} is installed"
            if result.changed
            else f"overlay {version} was already installed"
        )
        return message + ("; restart the app to use it" if restart else "")

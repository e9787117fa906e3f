"""Background model pulls for the API: progress by job id, one running pull per file.

`get(job_id)` returns {"id", "model", "file_name", "state": "running|succeeded|failed",
"bytes_done", "bytes_total", "message"}.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from llamaship.jobs import JobBoard, JobState
from llamaship.models.store import InstalledModel, ModelStore, PullSource

AfterPull = Callable[[InstalledModel], str]
"""Runs in the job once the model is installed (e.g. to serve it); returns the job's message."""


@dataclass
class _Job:
    id: str
    model: str
    file_name: str
    state: JobState = "running"
    bytes_done: int = 0
    bytes_total: int = 0
    message: str = "starting"


class PullJobs:
    """Runs pulls in daemon threads; keeps the last few jobs' outcomes for polling."""

    def __init__(self) -> None:
        self._board = JobBoard[_Job]("model-pull")

    def start(self, store: ModelStore, source: PullSource, then: AfterPull | None = None) -> str:
        """Start pulling `source` (then `then`, in the same job); while that file is being
        pulled, its running job's id."""
        return self._board.start(
            source.file_name,
            lambda: _Job(id=uuid.uuid4().hex, model=source.name, file_name=source.file_name),
            lambda job: self._pull(job, store, source, then),
        )

    def get(self, job_id: str) -> dict[str, Any] | None:
        """The job's progress (see the module docstring), or None for an unknown id."""
        return self._board.get(job_id)

    def wait(self, job_id: str, timeout: float | None = None) -> Mapping[str, Any] | None:
        """Block until the job ends (or `timeout` passes); its progress. For tests and shutdown."""
        return self._board.wait(job_id, timeout)

    def _pull(
        self, job: _Job, store: ModelStore, source: PullSource, then: AfterPull | None
    ) -> str:
        def progress(done: int, total: int) -> None:
            def change(job: _Job) -> None:
                job.bytes_done, job.bytes_total = done, total
                job.message = "downloading"

            self._board.update(job, change)

        model = store.pull(source, progress)

        def complete(job: _Job) -> None:
            job.bytes_done = job.bytes_total = model.size
            job.message = "verified and installed" + ("; loading it" if then else "")

        self._board.update(job, complete)
        if then is not None:
            return then(model)
        return f"{model.name} is installed ({model.path})"

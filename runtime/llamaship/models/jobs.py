"""Background model pulls for the API: progress by job id, one running pull per file.

`get(job_id)` returns {"id", "model", "file_name", "state": "running|succeeded|failed",
"bytes_done", "bytes_total", "message"}.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from llamaship.errors import LlamashipError
from llamaship.models.store import ModelStore, PullSource

_log = logging.getLogger(__name__)

JobState = Literal["running", "succeeded", "failed"]
_KEPT_JOBS = 16


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
        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}
        self._running: dict[str, str] = {}  # file name -> job id
        self._threads: dict[str, threading.Thread] = {}

    def start(self, store: ModelStore, source: PullSource) -> str:
        """Start pulling `source`; while that file is being pulled, its running job's id."""
        with self._lock:
            running = self._running.get(source.file_name)
            if running is not None:
                return running
            job = _Job(id=uuid.uuid4().hex, model=source.name, file_name=source.file_name)
            self._jobs[job.id] = job
            self._running[source.file_name] = job.id
            for old in list(self._jobs)[:-_KEPT_JOBS]:
                if old not in self._running.values():
                    del self._jobs[old]
                    self._threads.pop(old, None)
            thread = threading.Thread(
                target=self._run,
                args=(job, store, source),
                name=f"model-pull-{job.id[:8]}",
                daemon=True,
            )
            self._threads[job.id] = thread
        thread.start()
        return job.id

    def get(self, job_id: str) -> dict[str, Any] | None:
        """The job's progress (see the module docstring), or None for an unknown id."""
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None else asdict(job)

    def wait(self, job_id: str, timeout: float | None = None) -> Mapping[str, Any] | None:
        """Block until the job ends (or `timeout` passes); its progress. For tests and shutdown."""
        with self._lock:
            thread = self._threads.get(job_id)
        if thread is not None:
            thread.join(timeout)
        return self.get(job_id)

    def _progress(self, job: _Job, done: int, total: int) -> None:
        with self._lock:
            job.bytes_done, job.bytes_total = done, total
            job.message = "downloading"

    def _run(self, job: _Job, store: ModelStore, source: PullSource) -> None:
        try:
            model = store.pull(source, lambda done, total: self._progress(job, done, total))
        except LlamashipError as error:
            self._finish(job, "failed", str(error))
        except Exception as error:  # a thread has no caller to raise to
            _log.exception("model pull job %s crashed", job.id)
            self._finish(job, "failed", f"internal error: {type(error).__name__}: {error}")
        else:
            with self._lock:
                job.bytes_done = job.bytes_total = model.size
            self._finish(job, "succeeded", f"{model.name} is installed ({model.path})")

    def _finish(self, job: _Job, state: JobState, message: str) -> None:
        with self._lock:
            job.state = state
            job.message = message
            self._running.pop(job.file_name, None)

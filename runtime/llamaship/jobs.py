"""Background jobs for the API: daemon threads, one running job per key, polled by job id.

The overlay upgrades and the model pulls share this: the registry, the pruning of old jobs, the
thread start, `get`/`wait`, and turning any failure into a failed job with a message (a thread
has no caller to raise to).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any, Generic, Literal, Protocol, TypeVar

from llamaship_contract.errors import LlamashipError

_log = logging.getLogger(__name__)

JobState = Literal["running", "succeeded", "failed"]
KEPT_JOBS = 16


class Job(Protocol):
    """What the board needs of a job: a dataclass with these fields (and its own)."""

    id: str
    state: JobState
    message: str


J = TypeVar("J", bound=Job)


class JobBoard(Generic[J]):
    """Runs jobs in daemon threads and keeps the last `KEPT_JOBS` outcomes for polling."""

    def __init__(self, thread_name: str) -> None:
        self._thread_name = thread_name
        self._lock = threading.Lock()
        self._jobs: dict[str, J] = {}
        self._running: dict[str, str] = {}  # key -> running job id
        self._threads: dict[str, threading.Thread] = {}

    def start(self, key: str, job: Callable[[], J], work: Callable[[J], str]) -> str:
        """Run `work(job())` in the background unless a job for `key` runs: then its id.

        `work` returns the success message and may change the job through `update`; a
        `LlamashipError` it raises becomes the failed job's message.
        """
        with self._lock:
            running = self._running.get(key)
            if running is not None:
                return running
            new = job()
            self._jobs[new.id] = new
            self._running[key] = new.id
            for old in list(self._jobs)[:-KEPT_JOBS]:
                if old not in self._running.values():
                    del self._jobs[old]
                    self._threads.pop(old, None)
            thread = threading.Thread(
                target=self._run,
                args=(new, key, work),
                name=f"{self._thread_name}-{new.id[:8]}",
                daemon=True,
            )
            self._threads[new.id] = thread
        thread.start()
        return new.id

    def update(self, job: J, change: Callable[[J], None]) -> None:
        """Apply `change` to `job` under the board's lock (progress from the worker thread)."""
        with self._lock:
            change(job)

    def get(self, job_id: str) -> dict[str, Any] | None:
        """The job's fields, or None for an unknown id."""
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None else asdict(job)  # type: ignore[call-overload]  # J is a dataclass (see Job)

    def wait(self, job_id: str, timeout: float | None = None) -> Mapping[str, Any] | None:
        """Block until the job ends (or `timeout` passes); its fields. For tests and shutdown."""
        with self._lock:
            thread = self._threads.get(job_id)
        if thread is not None:
            thread.join(timeout)
        return self.get(job_id)

    def _run(self, job: J, key: str, work: Callable[[J], str]) -> None:
        state: JobState = "failed"
        try:
            message = work(job)
            state = "succeeded"
        except LlamashipError as error:
            message = str(error)
        except Exception as error:  # a thread has no caller to raise to
            _log.exception("%s job %s crashed", self._thread_name, job.id)
            message = f"internal error: {type(error).__name__}: {error}"
        with self._lock:
            job.state = state
            job.message = message
            self._running.pop(key, None)

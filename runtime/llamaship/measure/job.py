"""The measurement in the background, once the server is up, while the current variant serves.

The backend holds one `MeasurementJob` per launch: idle (nothing to measure, or the cached
result this launch followed), then running, then done (the result is cached; the next start
follows it) or failed (one line; the next start measures again). `status()` is what
`/api/capabilities` shows, with whether a restart would change the variant.
"""

from __future__ import annotations

import logging
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence

from llamaship.io.group_run import kill_group
from llamaship.measure.cache import MeasurementCache
from llamaship.measure.run import MeasurementFailed, MeasureRequest, measure_variant
from llamaship.paths import DataDirs
from llamaship_contract.measure import (
    MeasuredVariant,
    MeasurementState,
    MeasurementStatus,
    VariantMeasurement,
)

logger = logging.getLogger(__name__)

Done = Callable[[VariantMeasurement | None], None]
"""`on_done(result)`: the measurement ended (None: it failed or was stopped)."""


def next_variant(result: VariantMeasurement) -> MeasuredVariant:
    """The variant a start runs after `result` (without an override)."""
    return result.variant if result.faster else "cpu"


class MeasurementJob:
    """One launch's measurement: started at most once, in a daemon thread."""

    def __init__(
        self,
        request: MeasureRequest | None,
        dirs: DataDirs,
        active_variant: MeasuredVariant,
        *,
        cached: VariantMeasurement | None = None,
        command: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """`request`: what to measure (None: nothing); `cached`: the result this launch
        followed, shown until a new one exists; `command`/`env`: see `measure_variant`."""
        self._request = request
        self._cache = MeasurementCache(dirs)
        self._active = active_variant
        self._command = command
        self._env = env
        self._lock = threading.Lock()
        self._state: MeasurementState = "done" if cached is not None else "idle"
        self._progress = 1.0 if cached is not None else 0.0
        self._message = "" if cached is None else cached.reason
        self._result = cached
        self._child: subprocess.Popen[bytes] | None = None
        self._stopped = False
        self._thread: threading.Thread | None = None

    def start(self, on_done: Done | None = None) -> bool:
        """Begin measuring in the background; False when there is nothing to measure or it
        was started before."""
        with self._lock:
            if self._request is None or self._thread is not None or self._stopped:
                return False
            self._state, self._progress, self._message = "running", 0.0, "starting"
            self._thread = threading.Thread(
                target=self._run, args=(self._request, on_done), name="measure", daemon=True
            )
            self._thread.start()
            return True

    def stop(self) -> None:
        """Kill a running child (the server is stopping); the measurement fails."""
        with self._lock:
            self._stopped = True
            child = self._child
        if child is not None:
            kill_group(child)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the background thread (tests and shutdown)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def status(self) -> MeasurementStatus:
        with self._lock:
            result = self._result
            following = next_variant(result) if result is not None else None
            return MeasurementStatus(
                state=self._state,
                progress=self._progress,
                message=self._message,
                result=result,
                next_variant=following,
                restart_advised=following is not None and following != self._active,
            )

    def _progress_update(self, fraction: float, message: str) -> None:
        with self._lock:
            self._progress, self._message = fraction, message

    def _child_started(self, process: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._child = process
            stopped = self._stopped
        if stopped:
            kill_group(process)

    def _run(self, request: MeasureRequest, on_done: Done | None) -> None:
        result: VariantMeasurement | None = None
        try:
            result = measure_variant(
                request,
                command=self._command,
                env=self._env,
                on_progress=self._progress_update,
                on_child=self._child_started,
            )
            path = self._cache.save(result)
        except (MeasurementFailed, OSError) as error:
            message = "stopped with the server" if self._stopped else str(error)
            logger.warning("measuring %s failed: %s", request.gpu.variant, message)
            with self._lock:
                self._state, self._message, self._child = "failed", message, None
        else:
            advice = "; restart to use it" if next_variant(result) != self._active else ""
            logger.info(
                "%s (in %.1f s, saved to %s)%s", result.reason, result.seconds, path, advice
            )
            with self._lock:
                self._state, self._progress, self._child = "done", 1.0, None
                self._message, self._result = result.reason, result
        if on_done is not None:
            on_done(result)


def start_measurement(
    request: MeasureRequest,
    dirs: DataDirs,
    active_variant: MeasuredVariant,
    on_done: Done | None = None,
    *,
    command: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> MeasurementJob:
    """Measure `request` in the background now; the job (its `status()`, `stop()`)."""
    job = MeasurementJob(request, dirs, active_variant, command=command, env=env)
    job.start(on_done)
    return job

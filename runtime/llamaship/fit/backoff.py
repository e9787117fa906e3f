"""Out-of-memory back-off: smaller context, then fewer GPU layers, then CPU only.

llama-cpp-python reports a failed load only as `ValueError("Failed to load model from file: …")`
or `ValueError("Failed to create llama_context")`; whether memory ran out is in llama.cpp's log
("out of memory", "cudaMalloc failed", "failed to allocate"). `LlamaLog` routes that log into
Python logging and captures it while a load runs.

A process killed during a GPU load (the driver can abort it) is counted by the launch's boot
counting with the plan it used; the engine's next launch starts from the step after that plan
(`reduced_plans`) before the overlay runs out of tries.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from llamaship_contract.fit import FitPlan

_native_log = logging.getLogger("llamaship.llama_cpp")

MIN_BACKOFF_CTX = 4096  # context halving stops here (or at the model's own, if smaller)
LAYER_STEPS = 4  # fewer layers: 3/4, 1/2, 1/4 of the model's layers, then CPU only
OUT_OF_MEMORY_MARKERS = (
    "out of memory",
    "cudamalloc failed",
    "failed to allocate",
    "unable to allocate",
    "cannot allocate memory",
)
_GGML_LOG_ERROR = 4  # enum ggml_log_level: NONE, DEBUG, INFO, WARN, ERROR, CONT
_GGML_LOG_CONT = 5


def is_out_of_memory(error: str, log_lines: list[str]) -> bool:
    """Whether a failed load ran out of memory, judged by llama.cpp's log (and the error)."""
    text = "\n".join([error, *log_lines]).lower()
    return any(marker in text for marker in OUT_OF_MEMORY_MARKERS)


def memory_lines(log_lines: list[str], limit: int = 3) -> list[str]:
    """The log lines that say which allocation failed (the last `limit` of them)."""
    found = [line for line in log_lines if is_out_of_memory("", [line])]
    return found[-limit:]


def describe(plan: FitPlan) -> str:
    """A plan in one short phrase: `n_ctx=8192, n_gpu_layers=20`."""
    layers = "all" if plan.n_gpu_layers < 0 else str(plan.n_gpu_layers)
    split = f", tensor_split={list(plan.tensor_split)}" if plan.tensor_split else ""
    return f"n_ctx={plan.n_ctx}, n_gpu_layers={layers}{split}"


def reduced_plans(plan: FitPlan, model_n_ctx: int, n_layers: int) -> Iterator[FitPlan]:
    """The back-off steps after `plan`, in order: halve the context down to 4096 (or the
    model's own context if smaller), then offload fewer layers, then CPU only."""
    floor = min(MIN_BACKOFF_CTX, model_n_ctx) if model_n_ctx > 0 else MIN_BACKOFF_CTX
    n_ctx = plan.n_ctx if plan.n_ctx > 0 else model_n_ctx
    while n_ctx > floor:
        n_ctx = max(floor, n_ctx // 2)
        yield _step(plan, n_ctx=n_ctx, reason=f"out of memory: context halved to {n_ctx}")
    if plan.n_gpu_layers == 0:
        return
    n_ctx = min(n_ctx, floor) if n_ctx > 0 else floor
    offloaded = n_layers if plan.n_gpu_layers < 0 else min(plan.n_gpu_layers, n_layers)
    step = max(1, -(-n_layers // LAYER_STEPS))
    layers = offloaded - step
    while layers > 0:
        yield _step(
            plan,
            n_ctx=n_ctx,
            n_gpu_layers=layers,
            reason=f"out of memory: {layers} of {n_layers} layers on the GPU",
        )
        layers -= step
    yield _step(
        plan,
        n_ctx=n_ctx,
        n_gpu_layers=0,
        tensor_split=None,
        tensor_overrides=(),
        reason="out of memory on the GPU: CPU only",
    )


def _step(plan: FitPlan, reason: str, **changes: Any) -> FitPlan:
    return plan.model_copy(
        update={"source": "backoff", "reason": reason, "applied": True, **changes}
    )


class LlamaLog:
    """llama.cpp's log (llama and ggml) sent to Python logging, captured while a load runs.

    `llama_log_set` replaces llama-cpp-python's own callback (which prints to stderr); error
    lines go to the log as warnings, the rest at debug (info when `verbose`).
    """

    _callback: ClassVar[Any] = None  # the ctypes callback: alive while llama.cpp holds it
    _lock: ClassVar[threading.Lock] = threading.Lock()
    _captures: ClassVar[list[list[str]]] = []
    verbose: ClassVar[bool] = False
    _last_level: ClassVar[int] = 0

    @classmethod
    def install(cls) -> None:
        """Route llama.cpp's log through this class (idempotent; imports llama_cpp)."""
        with cls._lock:
            if cls._callback is not None:
                return
            import llama_cpp

            @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
            def callback(level: int, text: bytes | None, _user_data: ctypes.c_void_p) -> None:
                cls._receive(level, (text or b"").decode("utf-8", "replace"))

            llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
            cls._callback = callback

    @classmethod
    def _receive(cls, level: int, text: str) -> None:
        with cls._lock:
            for capture in cls._captures:
                capture.append(text)
            if level == _GGML_LOG_CONT:
                level = cls._last_level
            cls._last_level = level
        line = text.rstrip("\n")
        if not line:
            return
        if level == _GGML_LOG_ERROR:
            _native_log.warning("%s", line)
        else:
            _native_log.log(logging.INFO if cls.verbose else logging.DEBUG, "%s", line)

    @classmethod
    @contextmanager
    def captured(cls) -> Iterator[list[str]]:
        """The log lines llama.cpp writes while the block runs (complete lines at the end)."""
        pieces: list[str] = []
        lines: list[str] = []
        with cls._lock:
            cls._captures.append(pieces)
        try:
            yield lines
        finally:
            with cls._lock:
                cls._captures.remove(pieces)
            lines.extend(line for line in "".join(pieces).splitlines() if line.strip())

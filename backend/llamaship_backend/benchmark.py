"""Timed load, prompt evaluation (pp) and generation (tg), with llama.cpp's own counters.

Like llama-bench: after a warm-up, `n_prompt` tokens are evaluated in batches, then `n_gen`
tokens are decoded one at a time (each synchronized, as sampling would). llama.cpp's perf
counters give the time spent inside its decode calls; the rest of the wall time is this
module's overhead (`overhead_fraction`), which must stay under 2 %.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING

from llamaship.io.fs import atomic_write_bytes
from llamaship.launch.outcome import BootState
from llamaship_contract.bench import BENCH_RECORD_NAME, BenchRecord, BenchRun, BenchSummary
from llamaship_contract.document import dump_document_pretty, parse_document
from llamaship_contract.errors import ContractError
from llamaship_contract.fit import FitPlan

if TYPE_CHECKING:
    from llama_cpp import Llama

logger = logging.getLogger(__name__)

BENCH_TEXT = "Write a short story about a lighthouse keeper who finds a message in a bottle. "
WARMUP_TOKENS = 16
DEFAULT_PROMPT_TOKENS = 512
DEFAULT_GENERATED_TOKENS = 128


def bench_context(n_prompt: int, n_gen: int) -> int:
    """The context a benchmark run needs: the prompt, the generated tokens and the warm-up."""
    return n_prompt + n_gen + WARMUP_TOKENS


def _prompt_tokens(llama: Llama, count: int) -> list[int]:
    text: list[int] = llama.tokenize(BENCH_TEXT.encode("utf-8"), add_bos=False)
    return (text * (count // len(text) + 1))[:count]


def measure(load: Callable[[], Llama], n_gpu_layers: int, n_prompt: int, n_gen: int) -> BenchRun:
    """Load a model with `load` (offloading `n_gpu_layers`), warm it up, then time `n_prompt`
    prompt and `n_gen` generated tokens; the model is closed before returning."""
    import llama_cpp

    started = perf_counter()
    llama = load()
    load_seconds = perf_counter() - started
    try:
        tokens = _prompt_tokens(llama, max(n_prompt, n_gen, WARMUP_TOKENS))
        ctx = llama.ctx
        # Warm-up: first-use allocations and kernel loads stay out of the timing.
        llama.eval(tokens[:WARMUP_TOKENS])
        llama.eval(tokens[:1])
        llama_cpp.llama_synchronize(ctx)
        llama.reset()
        llama_cpp.llama_perf_context_reset(ctx)

        prompt_started = perf_counter()
        llama.eval(tokens[:n_prompt])
        llama_cpp.llama_synchronize(ctx)
        prompt_seconds = perf_counter() - prompt_started

        generation_started = perf_counter()
        for token in tokens[:n_gen]:
            llama.eval((token,))
            llama_cpp.llama_synchronize(ctx)
        generation_seconds = perf_counter() - generation_started

        perf = llama_cpp.llama_perf_context(ctx)
        n_ctx = llama.n_ctx()
    finally:
        llama.close()
    native_seconds = (perf.t_p_eval_ms + perf.t_eval_ms) / 1000.0
    wall = prompt_seconds + generation_seconds
    return BenchRun(
        n_gpu_layers=n_gpu_layers,
        n_ctx=n_ctx,
        load_seconds=load_seconds,
        prompt_tokens=n_prompt,
        prompt_seconds=prompt_seconds,
        prompt_tokens_per_second=n_prompt / prompt_seconds,
        generated_tokens=n_gen,
        generation_seconds=generation_seconds,
        tokens_per_second=n_gen / generation_seconds,
        native_seconds=native_seconds,
        overhead_fraction=max(0.0, 1.0 - native_seconds / wall),
    )


def benchmark_record(
    state: BootState, model: Path, plan: FitPlan, active: BenchRun, cpu: BenchRun | None
) -> BenchRecord:
    """The record of one run; `cpu` is None when the active plan is CPU only."""
    cpu_run = active if cpu is None else cpu
    return BenchRecord(
        model=model.name,
        model_path=str(model),
        model_size=model.stat().st_size,
        variant=state.active_variant,
        llama_cpp_version=state.llama_cpp_version,
        overlay_version=state.overlay_version,
        n_threads=state.n_threads,
        plan=plan,
        active=active,
        cpu=cpu_run,
        cpu_is_active=cpu is None,
        prompt_speedup=active.prompt_tokens_per_second / cpu_run.prompt_tokens_per_second,
        generation_speedup=active.tokens_per_second / cpu_run.tokens_per_second,
        measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def record_path(state_dir: Path) -> Path:
    return state_dir / BENCH_RECORD_NAME


def save_record(state_dir: Path, record: BenchRecord) -> Path:
    """Write the record (atomically) where /api/capabilities reads it."""
    path = record_path(state_dir)
    atomic_write_bytes(path, dump_document_pretty(record))
    return path


def load_record(state_dir: Path) -> BenchRecord | None:
    """The last benchmark record, or None if there is none (or it is unreadable)."""
    path = record_path(state_dir)
    try:
        return parse_document(BenchRecord, path.read_bytes(), str(path))
    except FileNotFoundError:
        return None
    except (OSError, ContractError) as error:
        logger.warning("ignoring the benchmark record %s: %s", path, error)
        return None


def benchmark_summary(state_dir: Path, model_id: str | None) -> BenchSummary | None:
    """What /api/capabilities shows of the last benchmark of the configured model."""
    record = load_record(state_dir)
    if record is None or record.model != model_id:
        return None
    return BenchSummary.of(record)

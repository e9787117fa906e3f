"""The benchmark record: timed load, prompt evaluation (pp) and generation (tg).

The timing itself (`measure`, as llama-bench does, with llama.cpp's own counters) lives in the
runtime (`llamaship.measure.speed`), which the measured variant choice shares; its overhead
(`overhead_fraction`) must stay under 2 %.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

from llamaship.io.fs import atomic_write_bytes
from llamaship.launch.outcome import BootState

# Re-exported: the engine times its runs through this module.
from llamaship.measure.speed import bench_context as bench_context
from llamaship.measure.speed import measure as measure
from llamaship_contract.bench import BENCH_RECORD_NAME, BenchRecord, BenchRun, BenchSummary
from llamaship_contract.document import dump_document_pretty, parse_document
from llamaship_contract.errors import ContractError
from llamaship_contract.fit import FitPlan

logger = logging.getLogger(__name__)

DEFAULT_PROMPT_TOKENS = 512
DEFAULT_GENERATED_TOKENS = 128


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

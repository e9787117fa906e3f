"""The benchmark record: load time and tokens/s with the active plan and on CPU, same build.

`llamaship bench` and `POST /api/admin/benchmark` write it to `LLAMASHIP_HOME/state/
benchmark.json`; `/api/capabilities` shows its summary ("about N tokens/s, K× CPU").
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llamaship_contract.document import Document
from llamaship_contract.fit import FitPlan

BENCH_SCHEMA: Literal[1] = 1
BENCH_RECORD_NAME = "benchmark.json"


class BenchRun(Document):
    """One model load and its timed prompt evaluation and generation."""

    n_gpu_layers: int = Field(ge=-1)
    n_ctx: int = Field(ge=1)
    load_seconds: float = Field(ge=0)
    prompt_tokens: int = Field(ge=1, description="tokens evaluated at once (pp)")
    prompt_seconds: float = Field(ge=0)
    prompt_tokens_per_second: float = Field(ge=0)
    generated_tokens: int = Field(ge=1, description="tokens decoded one at a time (tg)")
    generation_seconds: float = Field(ge=0)
    tokens_per_second: float = Field(ge=0)
    native_seconds: float = Field(
        ge=0, description="time inside llama.cpp's decode calls, by llama.cpp's own counters"
    )
    overhead_fraction: float = Field(
        ge=0, description="share of the timed wall time spent outside llama.cpp's decode calls"
    )


class BenchRecord(Document):
    """A benchmark run: the active plan and CPU only, with the same llama.cpp build."""

    schema_: Literal[1] = Field(default=BENCH_SCHEMA, alias="schema")
    model: str = Field(description="the model's file name")
    model_path: str
    model_size: int = Field(ge=0)
    variant: str
    llama_cpp_version: str
    overlay_version: str | None
    n_threads: int = Field(ge=1)
    plan: FitPlan
    active: BenchRun
    cpu: BenchRun
    cpu_is_active: bool = Field(description="the active plan is CPU only: one run serves both")
    prompt_speedup: float = Field(ge=0, description="active / CPU prompt tokens per second")
    generation_speedup: float = Field(ge=0, description="active / CPU generated tokens per second")
    measured_at: str = Field(description="UTC time, ISO 8601")

    @property
    def summary(self) -> str:
        """What /api/capabilities shows: `about 41 tokens/s, 1.0× CPU`."""
        return (
            f"about {self.active.tokens_per_second:.0f} tokens/s, "
            f"{self.generation_speedup:.1f}× CPU"
        )


class BenchSummary(Document):
    """What /api/capabilities shows of the last benchmark of the configured model."""

    summary: str = Field(description="about N tokens/s, K× CPU")
    variant: str
    tokens_per_second: float = Field(ge=0)
    cpu_tokens_per_second: float = Field(ge=0)
    generation_speedup: float = Field(ge=0)
    prompt_tokens_per_second: float = Field(ge=0)
    measured_at: str

    @classmethod
    def of(cls, record: BenchRecord) -> BenchSummary:
        return cls(
            summary=record.summary,
            variant=record.variant,
            tokens_per_second=record.active.tokens_per_second,
            cpu_tokens_per_second=record.cpu.tokens_per_second,
            generation_speedup=record.generation_speedup,
            prompt_tokens_per_second=record.active.prompt_tokens_per_second,
            measured_at=record.measured_at,
        )

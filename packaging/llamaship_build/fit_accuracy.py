"""How close the GGUF estimate comes to the buffers llama.cpp itself allocates.

`scripts/bench_runtime.py load`, run by the interpreter under test, prints the runtime's estimate
(`llamaship.fit.estimate`) as JSON, then loads the model on the CPU with llama.cpp's log on, which
reports its own buffer sizes ("model buffer size", "KV buffer size", "compute buffer size"). The
build side only reads that output. Model and KV bytes must be within 5 %.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from llamaship_build.bench_probe import probe_command, run_probe
from llamaship_build.errors import BuildError
from llamaship_build.gguf_models import Shape, write_llama_gguf

TARGET_ERROR = 0.05
_MIB = 1 << 20
_BUFFER = re.compile(r"\b(\S+) (model|KV|compute) buffer size =\s*([\d.]+) MiB")

# Generated shapes: grouped-query, tied output, multi-query with an unpadded context, quantized.
SHAPES: tuple[tuple[Shape, int], ...] = (
    (
        Shape(
            n_layer=4, n_embd=256, n_head=8, n_head_kv=2, n_ff=768, n_vocab=2000, weight_type="Q8_0"
        ),
        2048,
    ),
    (
        Shape(
            n_layer=8, n_embd=512, n_head=8, n_head_kv=8, n_ff=1408, n_vocab=4096, tied_output=True
        ),
        4096,
    ),
    (
        Shape(
            n_layer=2,
            n_embd=1024,
            n_head=16,
            n_head_kv=1,
            n_ff=2816,
            n_vocab=8192,
            weight_type="F32",
        ),
        1000,
    ),
)
GEMMA_CONTEXTS = (2048, 32768)


@dataclass(frozen=True)
class Buffers:
    """Bytes per kind of buffer, summed over devices (llama.cpp prints MiB with 2 decimals)."""

    model: int
    kv: int
    compute: int


@dataclass(frozen=True)
class Accuracy:
    """The estimate against llama.cpp for one model and context."""

    model: str
    n_ctx: int
    real: Buffers
    estimate: Buffers

    @staticmethod
    def _error(estimate: int, real: int) -> float:
        return abs(estimate - real) / real if real else float(estimate != 0)

    @property
    def model_error(self) -> float:
        return self._error(self.estimate.model, self.real.model)

    @property
    def kv_error(self) -> float:
        return self._error(self.estimate.kv, self.real.kv)

    @property
    def compute_error(self) -> float:
        return self._error(self.estimate.compute, self.real.compute)


def parse_buffers(log: str) -> Buffers:
    """Sum the buffer sizes llama.cpp logged while loading a model and creating a context."""
    sums = {"model": 0.0, "KV": 0.0, "compute": 0.0}
    for device, kind, mib in _BUFFER.findall(log):
        # CPU_REPACK: a CPU-only rearranged copy of some weights (the mapped buffer holds them
        # already); GPUs have none, and the estimate is for GPUs.
        if device != "CPU_REPACK":
            sums[kind] += float(mib)
    if not sums["model"]:
        msg = "llama.cpp logged no model buffer size: is its log (verbose) on?"
        raise BuildError(msg)
    return Buffers(*(round(sums[kind] * _MIB) for kind in ("model", "KV", "compute")))


def parse_estimate(stdout: str) -> Buffers:
    """The estimate the measuring subprocess printed as JSON on its first line."""
    try:
        document = json.loads(stdout.splitlines()[0])
        return Buffers(*(int(document[kind]) for kind in ("model", "kv", "compute")))
    except (IndexError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        msg = f"the measuring subprocess printed no estimate as JSON: {stdout[:200]!r}"
        raise BuildError(msg) from None


def load_command(python: Path, model: Path, n_ctx: int) -> list[str]:
    """Print the runtime's estimate for `model` at `n_ctx`, then load it with llama.cpp's log on."""
    return probe_command(python, "load", str(model), str(n_ctx))


def measure(
    model: Path, n_ctx: int, llama_path: Path | None = None, python: Path | None = None
) -> tuple[Buffers, Buffers]:
    """llama.cpp's own buffer sizes for `model` at `n_ctx` on the CPU, and the estimate of them.

    `python`: an interpreter with llama_cpp and llamaship (default: this one); `llama_path`: a
    directory holding another `llama_cpp` to measure (put first on sys.path).
    """
    env = dict(os.environ)
    if llama_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(llama_path), env.get("PYTHONPATH")]))
    result = run_probe(
        load_command(python or Path(sys.executable), model, n_ctx),
        f"llama.cpp could not load {model}",
        env=env,
        timeout=300,
    )
    return parse_buffers(result.stderr), parse_estimate(result.stdout)


def compare(
    model: Path, n_ctx: int, llama_path: Path | None = None, python: Path | None = None
) -> Accuracy:
    """Measure and estimate `model` at `n_ctx`."""
    return Accuracy(model.name, n_ctx, *measure(model, n_ctx, llama_path, python))


def markdown(rows: list[Accuracy]) -> str:
    """A table of the comparisons, for docs/benchmarks.md."""
    lines = [
        "| model | n_ctx | model MiB (llama.cpp / estimate) | error | KV MiB | error "
        "| compute MiB | error |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row.model} | {row.n_ctx} | {row.real.model / _MIB:.1f} / "
            f"{row.estimate.model / _MIB:.1f} | {row.model_error:.2%} | "
            f"{row.real.kv / _MIB:.1f} / {row.estimate.kv / _MIB:.1f} | {row.kv_error:.2%} | "
            f"{row.real.compute / _MIB:.1f} / {row.estimate.compute / _MIB:.1f} | "
            f"{row.compute_error:.2%} |"
        )
    return "\n".join(lines) + "\n"


def compare_all(
    workdir: Path, gemma: Path | None, llama_path: Path | None = None, python: Path | None = None
) -> list[Accuracy]:
    """Every generated shape (written into `workdir`) and gemma3-270m at two contexts."""
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for shape, n_ctx in SHAPES:
        model = workdir / f"{shape.name}.gguf"
        if not model.is_file():
            write_llama_gguf(model, shape)
        rows.append(compare(model, n_ctx, llama_path, python))
    for n_ctx in GEMMA_CONTEXTS if gemma is not None else ():
        assert gemma is not None
        rows.append(compare(gemma, n_ctx, llama_path, python))
    return rows

"""The GGUF estimate against the buffers llama.cpp itself allocates (target: within 5 %)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamaship_build.fit_accuracy import (
    SHAPES,
    TARGET_ERROR,
    compare_all,
    markdown,
    parse_buffers,
)

MIB = 1 << 20
LOG = """load_tensors:   CPU_Mapped model buffer size =   235.16 MiB
load_tensors:   CPU_REPACK model buffer size =    12.66 MiB
llama_kv_cache:        CPU KV buffer size =     6.00 MiB
llama_kv_cache:        CPU KV buffer size =    30.00 MiB
sched_reserve:        CPU compute buffer size =   514.50 MiB
"""


def test_buffer_sizes_are_read_from_llama_cpp_log() -> None:
    buffers = parse_buffers(LOG)
    assert buffers.model == round(235.16 * MIB)  # the REPACK copy is CPU-only
    assert buffers.kv == 36 * MIB
    assert buffers.compute == round(514.5 * MIB)


def test_the_estimate_matches_llama_cpp_on_gemma_and_generated_shapes(
    gemma_model: Path, tmp_path: Path
) -> None:
    rows = compare_all(tmp_path, gemma_model)
    assert len(rows) == len(SHAPES) + 2
    table = markdown(rows)
    for row in rows:
        assert row.model_error <= TARGET_ERROR, table
        assert row.kv_error <= TARGET_ERROR, table
        assert row.compute_error <= 0.25, table  # a reserve, not a target


@pytest.mark.parametrize("log", ["", "llama_kv_cache: CPU KV buffer size = 1.00 MiB\n"])
def test_a_log_without_model_buffers_is_an_error(log: str) -> None:
    with pytest.raises(Exception, match="logged no model buffer size"):
        parse_buffers(log)

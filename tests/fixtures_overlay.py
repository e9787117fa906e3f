"""Fixtures for the CUDA overlay: signing keys, the real CUDA wheel and module, and a built,
signed overlay.

The overlay is built by the real pipeline from the CUDA backend module of the genuine CUDA build
of llama-cpp-python in shared/fixtures (same sdist and portable flags as the bundle, so the
bundle's ggml loads it); its cuda-runtime layer holds the real libcudart from NVIDIA's PyPI
wheel (downloaded once into ~/.cache/llamaship-tests), not cuBLAS (444 MB, `nox -s overlay`
only).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from llamaship_build.overlay_build import build_overlay, download_runtime_wheels
from llamaship_build.overlay_layers import module_from_wheel
from llamaship_build.project import cache_dir
from llamaship_contract.signing import generate_keypair
from tiers import CUDA_FIXTURE_VARIABLE, cuda_fixture_path

# The libcudart wheel the tests use (hash-pinned like requirements/gpu.txt; 2.5 MB).
CUDART_LOCK = (
    "nvidia-cuda-runtime==13.5.37 \\\n"
    "    --hash=sha256:df2b79a8852f10d1fef8c848489c49eebb5754051bf870202a862831412b179d\n"
)
OVERLAY_VERSION = "0.3.36-cu13.0-1"
LLAMA_CPP_VERSION = "0.3.36"  # the fixture's, and the bundle's
MIN_DRIVER = {"linux": "580.65.06", "windows": "580.88"}
CREATED = datetime(2026, 11, 25, tzinfo=UTC)
TEST_LEVEL = 3  # zstd level for tests: the release uses 19; the format is the same


@dataclass(frozen=True)
class KeyPair:
    """A base64 ed25519 key pair made for the test session."""

    private: str
    public: str


@dataclass(frozen=True)
class BuiltOverlay:
    """The files `build_overlay` wrote, by layer, and the key that signed them."""

    out_dir: Path
    keys: KeyPair
    runtime_archive: Path
    runtime_manifest: Path
    llama_archive: Path
    llama_manifest: Path


def cached_test_keys(directory: Path) -> KeyPair:
    """The tests' release key pair, made once per machine and kept in `directory`.

    Stable, so the test bundle (which is built to trust it) is reused between runs; never the
    project's release key, and trusted by no release bundle.
    """
    private_file, public_file = directory / "signing-key.b64", directory / "signing-key.pub.b64"
    if not (private_file.is_file() and public_file.is_file()):
        directory.mkdir(parents=True, exist_ok=True)
        private, public = generate_keypair()
        for path, text in ((private_file, private), (public_file, public)):
            partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
            partial.write_text(text)
            partial.chmod(0o600)
            os.replace(partial, path)
    return KeyPair(private=private_file.read_text().strip(), public=public_file.read_text().strip())


@pytest.fixture(scope="session")
def signing_keys() -> KeyPair:
    """The tests' release key pair (see `cached_test_keys`), kept in the build cache."""
    return cached_test_keys(cache_dir() / "test-release-key")


@pytest.fixture(scope="session")
def cuda_wheel() -> Path:
    """The genuine CUDA (sm_75) build of llama-cpp-python 0.3.36 (tier `cuda_fixture`)."""
    path = cuda_fixture_path()
    if path is None or not path.is_file():
        pytest.fail(
            f"the CUDA fixture is missing ({path}): set {CUDA_FIXTURE_VARIABLE}", pytrace=False
        )
    return path


@pytest.fixture(scope="session")
def cuda_module(cuda_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture wheel's CUDA backend module, `libggml-cuda.so` (sm_75, as built)."""
    return module_from_wheel(cuda_wheel, tmp_path_factory.mktemp("cuda-module"))


@pytest.fixture(scope="session")
def cudart_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """NVIDIA's nvidia-cuda-runtime wheel from PyPI, hash-checked, cached between runs."""
    lock = tmp_path_factory.mktemp("cudart-lock") / "gpu.txt"
    lock.write_text(CUDART_LOCK)
    cache = Path.home() / ".cache" / "llamaship-tests" / "cuda-wheels"
    (wheel,) = download_runtime_wheels(lock, cache, packages=("nvidia-cuda-runtime",))
    return wheel


@pytest.fixture(scope="session")
def built_overlay(
    tmp_path_factory: pytest.TempPathFactory,
    cuda_module: Path,
    cudart_wheel: Path,
    signing_keys: KeyPair,
) -> BuiltOverlay:
    """Both layers built and signed from the CUDA fixture's module (runtime layer: cudart
    only)."""
    out_dir = tmp_path_factory.mktemp("overlay")
    build_overlay(
        cuda_module,
        out_dir,
        llama_cpp_version=LLAMA_CPP_VERSION,
        cuda_version="13.0",
        min_driver=MIN_DRIVER,
        min_vram_mb=1024,
        serial=7,
        overlay_version=OVERLAY_VERSION,
        signing_key_b64=signing_keys.private,
        runtime_wheels=[cudart_wheel],
        runtime_libraries=["libcudart.so.13"],
        compression_level=TEST_LEVEL,
        created=CREATED,
    )
    stem = f"{OVERLAY_VERSION}-linux_x86_64"
    return BuiltOverlay(
        out_dir=out_dir,
        keys=signing_keys,
        runtime_archive=out_dir / f"cuda-runtime-{stem}.tar.zst",
        runtime_manifest=out_dir / f"cuda-runtime-{stem}.json",
        llama_archive=out_dir / f"llama-cuda-{stem}.tar.zst",
        llama_manifest=out_dir / f"llama-cuda-{stem}.json",
    )

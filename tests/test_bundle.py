"""The CPU bundle: built by the real pipeline, launched, asked for capabilities and text."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from hardware.fakes import FakeHardware
from llamaship_build.archive import entries as archive_entries
from llamaship_build.launch import launched

pytestmark = pytest.mark.slow


def test_archive_checksum_and_manifest(dist_dir: Path, bundle_manifest: dict[str, Any]) -> None:
    archive = dist_dir / bundle_manifest["archive"]["name"]
    assert archive.name.startswith(f"backend-{bundle_manifest['version']}-linux-")
    assert archive.name.endswith("-cpu.tar.xz")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert (dist_dir / f"{archive.name}.sha256").read_text().split()[0] == digest
    assert bundle_manifest["archive"]["sha256"] == digest
    assert bundle_manifest["variant"] == "cpu"
    assert bundle_manifest["llama_cpp_python"] == "0.3.36"
    files = [path for path in (dist_dir / "backend").rglob("*") if not path.is_dir()]
    assert bundle_manifest["file_count"] == len(files)
    members = [entry for entry in archive_entries(archive) if entry.kind != "dir"]
    assert "backend/backend" in {member.name for member in members}
    assert len(members) == len(files)


def test_bundle_holds_each_library_once_and_no_model_or_cuda(
    dist_dir: Path, bundle_manifest: Any
) -> None:
    root = dist_dir / "backend"
    digests: dict[str, Path] = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_size > 64 * 1024:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            assert digest not in digests, f"{path} duplicates {digests[digest]}"
            digests[digest] = path
    names = [path.name for path in root.rglob("*")]
    assert not [name for name in names if name.endswith(".gguf")]
    assert not [name for name in names if "cuda" in name or "cublas" in name]
    variants = [name for name in names if name.startswith("libggml-cpu-")]
    assert {"libggml-cpu-x64.so", "libggml-cpu-haswell.so"} <= set(variants)


def test_detect_json_matches_llamaship_detect(
    bundle_executable: Path, hardware: FakeHardware
) -> None:
    bundled = subprocess.run(
        [str(bundle_executable), "detect", "--json"],
        env=hardware.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bundled.returncode == 0, bundled.stderr
    report = json.loads(bundled.stdout)
    assert report["gpus"] == [] and report["source"] == "none"
    assert set(report) == set(hardware.detect())


def test_bundle_serves_capabilities_and_generates_text(
    bundle_executable: Path, hardware: FakeHardware, gemma_model: Path
) -> None:
    env = hardware.env(
        LLAMASHIP_MODEL=str(gemma_model), LLAMACPP_N_THREADS="1", LLAMASHIP_N_CTX="512"
    )
    with launched([str(bundle_executable)], env, inherit_env=False) as backend:
        capabilities = httpx.get(f"{backend.url}/api/capabilities", timeout=30).json()
        assert capabilities["gpus"] == []
        assert capabilities["llama_cpp"]["variant"] == "cpu"
        assert capabilities["llama_cpp"]["version"] == "0.3.36"
        assert capabilities["llama_cpp"]["gpu_offload"] is False
        assert "_internal" in capabilities["llama_cpp"]["path"]
        reply = httpx.post(
            f"{backend.url}/v1/chat/completions",
            timeout=300,
            json={"messages": [{"role": "user", "content": "Name a color."}], "max_tokens": 8},
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["content"].strip()
        process = backend.process
    assert process.returncode == 0, backend.log.read_text()


def test_bad_model_is_a_clear_4xx_and_the_bundle_stays_up(
    bundle_executable: Path, hardware: FakeHardware, tmp_path: Path
) -> None:
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 not a model")
    refused = subprocess.run(
        [str(bundle_executable), "serve"],
        env=hardware.env(LLAMASHIP_MODEL=str(not_gguf)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode == 2  # a configured model that is not GGUF stops serve at start
    assert refused.stderr.strip().count("\n") == 0 and "GGUF" in refused.stderr
    assert "Traceback" not in refused.stderr

    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 0))  # a valid header: fails to load
    env = hardware.env(LLAMASHIP_MODEL=str(corrupt))
    with launched([str(bundle_executable)], env, inherit_env=False) as backend:
        reply = httpx.post(
            f"{backend.url}/v1/chat/completions",
            timeout=60,
            json={"messages": [{"role": "user", "content": "hi"}]},
        )
        assert 400 <= reply.status_code < 500
        assert str(corrupt) in reply.json()["error"]["message"]
        assert httpx.get(f"{backend.url}/api/health", timeout=10).status_code == 200

"""Release hygiene: the tag names the version, pre-releases are not latest, cached build outputs
match the repository's pins, the overlay uses the file pip hash-checked, and a stale live index
raises the alarm."""

from __future__ import annotations

import hashlib
import json
import struct
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from llamaship_build import index_watch, macos_target, output_pins, release_tag
from llamaship_build.errors import BuildError
from llamaship_build.overlay_build import hash_checked_file
from llamaship_build.publish import publish_commands
from llamaship_contract.names import ExitStatus


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("tag", "prerelease"),
    [
        ("v1.2.0", False),
        ("v1.2.0.post1", False),
        ("v1.2.0-rc1", True),
        ("v1.2.0rc1", True),
        ("v1.2.0-beta", True),
        ("v1.2.0b2", True),
        ("v1.2.0.dev3", True),
    ],
)
def test_pre_release_tags_are_recognised(tag: str, prerelease: bool) -> None:
    assert release_tag.is_prerelease(tag) is prerelease


def test_the_tag_must_be_v_and_the_project_version() -> None:
    release_tag.check_tag("v1.2.0", "1.2.0")
    with pytest.raises(release_tag.TagMismatch, match=r"v1\.2\.1 does not match .* 1\.2\.0"):
        release_tag.check_tag("v1.2.1", "1.2.0")
    with pytest.raises(release_tag.TagMismatch):
        release_tag.check_tag("1.2.0", "1.2.0")


def test_the_tag_check_reads_pyproject(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nversion = "2.0.0rc1"\n')
    monkeypatch.setenv("LLAMASHIP_BUILD_ROOT", str(tmp_path))
    assert release_tag.main(["v2.0.0rc1"]) == 0
    assert "pre-release" in capsys.readouterr().out
    assert release_tag.main(["v2.0.0"]) == ExitStatus.BUILD_FAILED
    error = capsys.readouterr().err
    assert error.startswith("error: the tag v2.0.0 does not match") and error.count("\n") == 1


def test_a_pre_release_is_published_as_one_and_never_marked_latest(tmp_path: Path) -> None:
    assets = [tmp_path / "a.zip"]
    create, _, public = publish_commands("v1.3.0-rc1", assets, notes="")
    assert "--prerelease" in create and public[-1] == "--latest=false"
    create, _, public = publish_commands("v1.3.0", assets, notes="")
    assert "--prerelease" not in create and public[-1] == "--latest"


def _cache(tmp_path: Path) -> Path:
    cache = tmp_path / "cache"
    slot = cache / "wheelhouse" / "portable-0123456789abcdef"
    slot.mkdir(parents=True)
    (slot / "llama_cpp_python-0.3.16-cp311-cp311-linux_x86_64.whl").write_bytes(b"wheel")
    tool = cache / "fit-tool" / "llama-fit-params-fedcba9876543210"
    tool.mkdir(parents=True)
    (tool / "llama-fit-params").write_bytes(b"tool")
    (cache / "fit-tool" / "llama-fit-params-fedcba9876543210.lock").write_bytes(b"")
    module = cache / "cuda" / "00112233aabbccdd"
    module.mkdir(parents=True)
    (module / "libggml-cuda.so").write_bytes(b"module")
    (module / "build.json").write_text('{"seconds": 1299}')
    return cache


def test_recorded_outputs_pass_and_any_changed_byte_fails(tmp_path: Path) -> None:
    cache, requirements = _cache(tmp_path), tmp_path / "requirements"
    requirements.mkdir()
    pins_file = output_pins.record(cache, requirements)
    pins = json.loads(pins_file.read_text())["outputs"]
    assert pins == {
        "cuda/00112233aabbccdd/libggml-cuda.so": _sha(b"module"),
        "fit-tool/llama-fit-params-fedcba9876543210/llama-fit-params": _sha(b"tool"),
        "wheelhouse/portable-0123456789abcdef/"
        "llama_cpp_python-0.3.16-cp311-cp311-linux_x86_64.whl": _sha(b"wheel"),
    }
    assert output_pins.check(cache, requirements) == 3
    # The build record (timings) is not an output: it may differ between two compiles.
    (cache / "cuda" / "00112233aabbccdd" / "build.json").write_text('{"seconds": 1400}')
    assert output_pins.check(cache, requirements) == 3
    (cache / "fit-tool" / "llama-fit-params-fedcba9876543210" / "llama-fit-params").write_bytes(
        b"poisoned"
    )
    with pytest.raises(output_pins.UnpinnedOutput, match="the repository pins") as error:
        output_pins.check(cache, requirements)
    assert "llama-fit-params-fedcba9876543210/llama-fit-params is " + _sha(b"poisoned") in str(
        error.value
    )


def test_an_output_of_an_unpinned_recipe_fails(tmp_path: Path) -> None:
    cache, requirements = _cache(tmp_path), tmp_path / "requirements"
    requirements.mkdir()
    with pytest.raises(output_pins.UnpinnedOutput, match="is not pinned"):
        output_pins.check(cache, requirements)


def test_nvidia_wheels_must_carry_a_hash_of_the_gpu_or_toolkit_lock(tmp_path: Path) -> None:
    cache, requirements = tmp_path / "cache", tmp_path / "requirements"
    (cache / "nvidia-wheels").mkdir(parents=True)
    requirements.mkdir()
    (cache / "nvidia-wheels" / "nvidia_cuda_runtime-13.0.96-py3-none-manylinux.whl").write_bytes(
        b"runtime"
    )
    lock = f"nvidia-cuda-runtime==13.0.96 \\\n    --hash=sha256:{_sha(b'runtime')}\n"
    (requirements / "gpu.txt").write_text(lock)
    assert output_pins.check(cache, requirements) == 1
    (cache / "nvidia-wheels" / "nvidia_cuda_nvcc-13.5.37-py3-none-manylinux.whl").write_bytes(
        b"nvcc"
    )
    with pytest.raises(output_pins.UnpinnedOutput, match="nvidia_cuda_nvcc"):
        output_pins.check(cache, requirements)
    toolkit = f"nvidia-cuda-nvcc==13.5.37 \\\n    --hash=sha256:{_sha(b'nvcc')}\n"
    (requirements / "cuda-toolkit.txt").write_text(toolkit)
    assert output_pins.check(cache, requirements) == 2
    (cache / "nvidia-wheels" / "nvidia_cuda_nvcc-13.5.37-py3-none-manylinux.whl").unlink()
    (cache / "nvidia-wheels" / "nvidia_cuda_runtime-13.0.96-py3-none-manylinux.whl").write_bytes(
        b"other"
    )
    with pytest.raises(
        output_pins.UnpinnedOutput,
        match=r"has no hash in requirements/gpu\.txt or cuda-toolkit\.txt",
    ):
        output_pins.check(cache, requirements)


def test_a_malformed_pins_file_is_named(tmp_path: Path) -> None:
    (tmp_path / output_pins.PINS_FILE).write_text("[]")
    with pytest.raises(BuildError, match=r"build-outputs\.json must be"):
        output_pins.load_pins(tmp_path / output_pins.PINS_FILE)


def test_the_overlay_takes_the_file_pip_hash_checked_not_the_first_name_match(
    tmp_path: Path,
) -> None:
    stem = "nvidia_cublas-13.0.2.14-"
    (tmp_path / f"{stem}py3-none-manylinux_2_27_aarch64.whl").write_bytes(b"arm")
    (tmp_path / f"{stem}py3-none-manylinux_2_27_x86_64.whl").write_bytes(b"x86")
    chosen = hash_checked_file(tmp_path, f"{stem}*.whl", [_sha(b"x86")])
    assert chosen.name.endswith("x86_64.whl")
    with pytest.raises(BuildError, match="found none"):
        hash_checked_file(tmp_path, f"{stem}*.whl", [_sha(b"neither")])
    with pytest.raises(BuildError, match="remove the extra files"):
        hash_checked_file(tmp_path, f"{stem}*.whl", [_sha(b"x86"), _sha(b"arm")])


def _index(expires: datetime, serial: int = 7) -> bytes:
    return json.dumps({"serial": serial, "expires": f"{expires:%Y-%m-%dT%H:%M:%SZ}"}).encode()


def test_an_index_expiring_within_the_margin_raises_the_alarm() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    live = index_watch.freshness(_index(now + timedelta(days=20)), "live")
    assert index_watch.check_margin(live, now, 10, "u").days == 20
    soon = index_watch.freshness(_index(now + timedelta(days=9)), "live")
    with pytest.raises(index_watch.IndexExpiresSoon, match="re-sign has not run") as error:
        index_watch.check_margin(soon, now, 10, "u")
    assert error.value.exit_code == ExitStatus.INDEX_EXPIRED
    with pytest.raises(BuildError, match="not a release index"):
        index_watch.freshness(b'{"serial": 1}', "live")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server of `tmp_path` (404 for what is missing)."""
    root = tmp_path

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = root / self.path.lstrip("/")
            if not path.is_file():
                self.send_error(404)
                return
            data = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def test_the_watch_reads_the_live_index_and_names_its_state(
    served: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, root = served
    assert index_watch.main([f"{url}/releases.json"]) == 0
    assert "nothing released" in capsys.readouterr().out
    assert index_watch.main([f"{url}/releases.json", "--require"]) == ExitStatus.BUILD_FAILED
    (root / "releases.json").write_bytes(_index(datetime.now(UTC) + timedelta(days=29)))
    assert index_watch.main([f"{url}/releases.json"]) == 0
    assert "expires in 28 days" in capsys.readouterr().out
    (root / "releases.json").write_bytes(_index(datetime.now(UTC) + timedelta(days=3)))
    assert index_watch.main([f"{url}/releases.json"]) == ExitStatus.INDEX_EXPIRED
    assert "less than 10 days" in capsys.readouterr().err
    (root / "new.json").write_bytes(_index(datetime.now(UTC) + timedelta(days=29), serial=5))
    args = [f"{url}/releases.json", "--wait-for", str(root / "new.json")]
    assert index_watch.main(args) == ExitStatus.INDEX_EXPIRED  # serial 7 >= 5: no waiting


def _thin_macho(minos: tuple[int, int], legacy: bool = False) -> bytes:
    """A 64-bit Mach-O header with one version load command (all a floor check reads)."""
    packed = minos[0] << 16 | minos[1] << 8
    command = (
        struct.pack("<IIII", 0x24, 16, packed, packed)
        if legacy
        else struct.pack("<IIIIII", 0x32, 24, 1, packed, packed, 0)
    )
    header = struct.pack("<IIIIIIII", 0xFEEDFACF, 0x0100000C, 0, 6, 1, len(command), 0, 0)
    return header + command


def _fat_macho(*slices: bytes) -> bytes:
    offset = 4096
    table, body = b"", b""
    for index, thin in enumerate(slices):
        start = offset + index * 4096
        table += struct.pack(">IIIII", 0x0100000C, 0, start, len(thin), 12)
        body += thin.ljust(4096, b"\0")
    head = struct.pack(">II", 0xCAFEBABE, len(slices)) + table
    return head.ljust(offset, b"\0") + body


def test_the_macos_floor_check_reads_thin_universal_and_legacy_mach_o(tmp_path: Path) -> None:
    assert macos_target.minimum_macos(_thin_macho((11, 0))) == (11, 0)
    assert macos_target.minimum_macos(_thin_macho((10, 9), legacy=True)) == (10, 9)
    assert macos_target.minimum_macos(_fat_macho(_thin_macho((11, 0)), _thin_macho((14, 0)))) == (
        14,
        0,
    )
    assert macos_target.minimum_macos(b"#!/bin/sh\necho not a binary\n") is None
    bundle = tmp_path / "backend"
    (bundle / "_internal" / "numpy").mkdir(parents=True)
    (bundle / "backend").write_bytes(_fat_macho(_thin_macho((10, 9)), _thin_macho((11, 0))))
    (bundle / "_internal" / "numpy" / "_core.so").write_bytes(_thin_macho((14, 0)))
    (bundle / "_internal" / "README").write_text("text")
    assert macos_target.too_new(bundle, "14.0") == []
    assert macos_target.too_new(bundle, "11.0") == ["_internal/numpy/_core.so: needs macOS 14.0"]
    assert macos_target.main([str(bundle), "--oldest", "11.0"]) == ExitStatus.BUILD_FAILED

"""The overlay build from the genuine CUDA wheel: layout, archives, manifests, index."""

from __future__ import annotations

import hashlib
import json
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
import zstandard

from fixtures_overlay import (
    CREATED,
    MIN_DRIVER,
    OVERLAY_VERSION,
    TEST_LEVEL,
    BuiltOverlay,
    KeyPair,
    python_with_path,
)
from llamaship_build.elf import Patchelf, find_patchelf, is_elf
from llamaship_build.errors import BuildError
from llamaship_build.overlay_archive import MTIME
from llamaship_build.overlay_build import build_overlay, runtime_requirements
from llamaship_build.release_index import write_release_index
from llamaship_contract.overlay import LayerManifest, layer_id, parse_index, parse_manifest
from llamaship_contract.signing import SigningKeyError, verify

CPU_VARIANTS = 14  # the fixture's GGML_CPU_ALL_VARIANTS backends


def load_manifest(path: Path, keys: KeyPair) -> LayerManifest:
    data = path.read_bytes()
    verify(data, path.with_name(path.name + ".sig").read_bytes(), [keys.public])
    return parse_manifest(data)


def archive_members(archive: Path) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    with (
        open(archive, "rb") as raw,
        zstandard.ZstdDecompressor().stream_reader(raw) as plain,
        tarfile.open(fileobj=plain, mode="r|") as tar,
    ):
        for info in tar:
            handle = tar.extractfile(info) if info.isfile() else None
            members.append((info, handle.read() if handle else None))
    return members


def extract(archive: Path, target: Path) -> Path:
    with (
        open(archive, "rb") as raw,
        zstandard.ZstdDecompressor().stream_reader(raw) as plain,
        tarfile.open(fileobj=plain, mode="r|") as tar,
    ):
        tar.extractall(target, filter="data")
    return target


def build_again(built: BuiltOverlay, wheel: Path, cudart: Path, out_dir: Path) -> list[Path]:
    return build_overlay(
        wheel,
        out_dir,
        cuda_version="13.0",
        min_driver=MIN_DRIVER,
        min_vram_mb=1024,
        serial=7,
        overlay_version=OVERLAY_VERSION,
        signing_key_b64=built.keys.private,
        runtime_wheels=[cudart],
        runtime_libraries=["libcudart.so.13"],
        compression_level=TEST_LEVEL,
        created=CREATED,
    )


@pytest.mark.parametrize("layer", ["runtime", "llama"])
def test_archive_holds_exactly_the_signed_manifest_files(
    built_overlay: BuiltOverlay, layer: str
) -> None:
    archive: Path = getattr(built_overlay, f"{layer}_archive")
    manifest = load_manifest(getattr(built_overlay, f"{layer}_manifest"), built_overlay.keys)
    assert manifest.archive.name == archive.name
    assert manifest.archive.size == archive.stat().st_size
    assert manifest.archive.sha256 == hashlib.sha256(archive.read_bytes()).hexdigest()
    members = archive_members(archive)
    assert [info.name for info, _ in members] == [entry.path for entry in manifest.files]
    by_path = {entry.path: entry for entry in manifest.files}
    for info, data in members:
        entry = by_path[info.name]
        assert (info.mtime, info.uid, info.gid, info.uname, info.gname) == (MTIME, 0, 0, "", "")
        if entry.link is None:
            assert info.isfile() and data is not None
            assert (len(data), hashlib.sha256(data).hexdigest()) == (entry.size, entry.sha256)
            assert info.mode in (0o644, 0o755)
        else:
            assert info.issym() and info.linkname == entry.link
    assert manifest.unpacked_size == sum(len(data) for _, data in members if data is not None)


def test_llama_layer_keeps_each_library_once_with_origin_runpath(
    built_overlay: BuiltOverlay, tmp_path: Path
) -> None:
    manifest = load_manifest(built_overlay.llama_manifest, built_overlay.keys)
    assert all(entry.path.startswith("llama_cpp/") for entry in manifest.files)
    libraries = [
        entry
        for entry in manifest.files
        if entry.link is None and entry.path.startswith("llama_cpp/lib/")
    ]
    assert len({entry.sha256 for entry in libraries}) == len(libraries), "duplicate copies"
    links = {entry.path.rsplit("/", 1)[1]: entry.link for entry in manifest.files if entry.link}
    assert links == {
        "libggml.so": "libggml.so.0",
        "libllama.so": "libllama.so.0",
        "libmtmd.so": "libmtmd.so.0",
    }
    lib_dir = extract(built_overlay.llama_archive, tmp_path) / "llama_cpp" / "lib"
    names = sorted(path.name for path in lib_dir.iterdir())
    assert {"libggml-base.so.0", "libggml.so.0", "libllama.so.0", "libggml-cuda.so"} <= set(names)
    assert len([name for name in names if name.startswith("libggml-cpu-")]) == CPU_VARIANTS
    patchelf = Patchelf(find_patchelf())
    elves = [path for path in lib_dir.iterdir() if not path.is_symlink() and is_elf(path)]
    # llama.cpp's memory fit joins the layer (the fixture builds it first, as `overlay` does)
    fit_tool = set(names) & {
        "llama-fit-params",
        "libllama-fit-params-impl.so",
        "libllama-common.so.0",
    }
    assert len(fit_tool) == 3
    # + libggml-base, libggml, libllama, libmtmd, cuda
    assert len(elves) == CPU_VARIANTS + 5 + len(fit_tool)
    assert {path.name: patchelf.runpath(path) for path in elves} == {
        path.name: "$ORIGIN" for path in elves
    }
    assert "libcudart.so.13" in patchelf.needed(lib_dir / "libggml-cuda.so")


def test_llama_layer_imports_and_registers_the_cpu_backend(
    built_overlay: BuiltOverlay, tmp_path: Path
) -> None:
    layer = extract(built_overlay.llama_archive, tmp_path)
    # _ggml loads libggml.so, native loads libggml.so.0: one instance means one registry.
    result = python_with_path(
        layer,
        (
            "import llama_cpp, llama_cpp._ggml as g\n"
            "from llamaship.native import load_ggml_backends\n"
            "loaded = load_ggml_backends()\n"
            "g.libggml.ggml_backend_reg_count.restype = __import__('ctypes').c_size_t\n"
            "print(llama_cpp.__file__, loaded.backends, g.libggml.ggml_backend_reg_count())\n"
        ),
    )
    assert result.returncode == 0, result.stderr
    module_file, backends = result.stdout.split(" ", 1)
    assert module_file == str(layer / "llama_cpp" / "__init__.py")
    assert backends.strip() == "('CPU',) 1"  # no driver here: the CUDA backend is skipped


def test_runtime_layer_is_cudart_unmodified_and_required_by_llama_layer(
    built_overlay: BuiltOverlay, cudart_wheel: Path
) -> None:
    runtime = load_manifest(built_overlay.runtime_manifest, built_overlay.keys)
    llama = load_manifest(built_overlay.llama_manifest, built_overlay.keys)
    with zipfile.ZipFile(cudart_wheel) as wheel:
        original = wheel.read("nvidia/cu13/lib/libcudart.so.13")
        licence = wheel.read("nvidia_cuda_runtime-13.5.37.dist-info/licenses/License.txt")
    assert [(entry.path, entry.sha256) for entry in runtime.files] == [
        ("lib/libcudart.so.13", hashlib.sha256(original).hexdigest()),
        ("licenses/nvidia_cuda_runtime/License.txt", hashlib.sha256(licence).hexdigest()),
    ]
    assert runtime.requires is None
    assert llama.requires is not None
    assert (llama.requires.id, llama.requires.sha256) == (layer_id(runtime), runtime.archive.sha256)
    assert (llama.llama_cpp_version, llama.python_tag, llama.platform) == (
        "0.3.36",
        "py3",
        "linux_x86_64",
    )
    # the fixture was built with CMAKE_CUDA_ARCHITECTURES=75: sm_75 SASS plus compute_75 PTX,
    # read from its device code (no --archs option reaches the manifest)
    assert (llama.serial, llama.cuda_archs, llama.ptx_archs, dict(llama.min_driver)) == (
        7,
        ("75",),
        ("75",),
        MIN_DRIVER,
    )


def test_build_is_deterministic(
    built_overlay: BuiltOverlay, cuda_wheel: Path, cudart_wheel: Path, tmp_path: Path
) -> None:
    again = build_again(built_overlay, cuda_wheel, cudart_wheel, tmp_path)
    for path in again:
        assert path.read_bytes() == (built_overlay.out_dir / path.name).read_bytes(), path.name
    assert not list(tmp_path.glob(".staging-*")), "staging directory left behind"


def test_missing_runtime_library_is_named(
    built_overlay: BuiltOverlay, cuda_wheel: Path, cudart_wheel: Path, tmp_path: Path
) -> None:
    with pytest.raises(BuildError, match=r"libcublas\.so\.13") as raised:
        build_overlay(
            cuda_wheel,
            tmp_path,
            cuda_version="13.0",
            min_driver=MIN_DRIVER,
            min_vram_mb=1024,
            serial=7,
            overlay_version=OVERLAY_VERSION,
            signing_key_b64=built_overlay.keys.private,
            runtime_wheels=[cudart_wheel],
            compression_level=TEST_LEVEL,
        )
    assert "libcuda.so.1" not in str(raised.value)  # the driver's library is never shipped
    assert list(tmp_path.iterdir()) == []


def test_not_a_llama_wheel_and_bad_key_are_refused(
    built_overlay: BuiltOverlay, cudart_wheel: Path, tmp_path: Path
) -> None:
    options: dict[str, Any] = {
        "cuda_version": "13.0",
        "min_driver": MIN_DRIVER,
        "min_vram_mb": 1024,
        "serial": 7,
        "overlay_version": OVERLAY_VERSION,
        "runtime_wheels": [cudart_wheel],
    }
    with pytest.raises(BuildError, match="not a llama-cpp-python wheel"):
        build_overlay(cudart_wheel, tmp_path, signing_key_b64=built_overlay.keys.private, **options)
    with pytest.raises(SigningKeyError):
        build_overlay(cudart_wheel, tmp_path, signing_key_b64="bm90IGEga2V5", **options)


def test_runtime_requirements_come_from_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / "gpu.txt"
    pin = (
        'nvidia-cuda-runtime==13.5.37 ; sys_platform == "linux" \\\n'
        "    --hash=sha256:" + "b" * 64 + " \\\n    --hash=sha256:" + "c" * 64
    )
    lock.write_text(
        "fastapi==1.0 \\\n    --hash=sha256:"
        + "a" * 64
        + "\n"
        + pin
        + "\n    # via -r requirements/gpu.in\n"
    )
    assert runtime_requirements(lock, ("nvidia_cuda.runtime",)) == pin + "\n"
    with pytest.raises(BuildError, match="nvidia-cublas"):
        runtime_requirements(lock)


def test_release_index_is_signed_and_points_at_the_layers(built_overlay: BuiltOverlay) -> None:
    manifests = [built_overlay.runtime_manifest, built_overlay.llama_manifest]
    out_dir = built_overlay.out_dir
    index_path, signature_path = write_release_index(
        out_dir,
        [manifests],
        serial=7,
        signing_key_b64=built_overlay.keys.private,
        base_url="https://releases.example.invalid/llamaship/",
        created=CREATED,
    )
    try:
        data = index_path.read_bytes()
        verify(data, signature_path.read_bytes(), [built_overlay.keys.public])
        index = parse_index(data)
        entry = index.overlays[0]
        assert (index.serial, entry.overlay_version, entry.serial) == (7, OVERLAY_VERSION, 7)
        for path in manifests:
            manifest = parse_manifest(path.read_bytes())
            ref = entry.layer(manifest.layer)
            assert ref.id == layer_id(manifest)
            assert ref.manifest_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
            assert ref.manifest == f"https://releases.example.invalid/llamaship/{path.name}"
            assert ref.archive.endswith("/" + manifest.archive.name)
        with pytest.raises(BuildError, match="serials only grow"):
            write_release_index(
                out_dir,
                [manifests],
                serial=7,
                signing_key_b64=built_overlay.keys.private,
                base_url="",
            )
        assert index_path.read_bytes() == data
        write_release_index(
            out_dir, [manifests], serial=8, signing_key_b64=built_overlay.keys.private, base_url=""
        )
        relative = parse_index(index_path.read_bytes())
        assert relative.serial == 8
        assert relative.overlays[0].layer("llama-cuda").manifest == manifests[1].name
    finally:
        index_path.unlink(missing_ok=True)
        signature_path.unlink(missing_ok=True)


def test_release_index_refuses_incomplete_releases(
    built_overlay: BuiltOverlay, tmp_path: Path
) -> None:
    for manifests in (
        [built_overlay.llama_manifest],
        [built_overlay.llama_manifest, built_overlay.llama_manifest],
    ):
        with pytest.raises(BuildError):
            write_release_index(
                tmp_path,
                [manifests],
                serial=7,
                signing_key_b64=built_overlay.keys.private,
                base_url="",
            )
    assert not (tmp_path / "releases.json").exists()
    assert json.loads(built_overlay.llama_manifest.read_bytes())["layer"] == "llama-cuda"

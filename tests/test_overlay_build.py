"""The overlay build from the genuine CUDA build's backend module: layout, archives, manifests,
index, and the module loaded by the bundle's own ggml (the dev venv's portable llama_cpp, from
the same sdist and flags)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
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
)
from hardware.fake_cuda import compile_failing_libcuda, compile_stand_in_cublas
from llamaship_build.cuda_layer import stage_cuda_layer
from llamaship_build.elf import Patchelf, find_patchelf, read_section
from llamaship_build.errors import BuildError
from llamaship_build.overlay_archive import MTIME
from llamaship_build.overlay_build import build_overlay, runtime_requirements
from llamaship_build.overlay_layers import module_from_wheel
from llamaship_build.release_index import write_release_index
from llamaship_contract.overlay import LayerManifest, layer_id, parse_manifest
from llamaship_contract.release_index import parse_index
from llamaship_contract.signing import SigningKeyError, verify
from overlay_kit.releases import published_entries


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


def build_again(built: BuiltOverlay, module: Path, cudart: Path, out_dir: Path) -> list[Path]:
    return build_overlay(
        module,
        out_dir,
        llama_cpp_version="0.3.36",
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


def test_llama_layer_is_the_stripped_module_without_runpath_and_its_licence(
    built_overlay: BuiltOverlay, tmp_path: Path
) -> None:
    manifest = load_manifest(built_overlay.llama_manifest, built_overlay.keys)
    assert [(entry.path, entry.link) for entry in manifest.files] == [
        ("backends/libggml-cuda.so", None),
        ("licenses/llama.cpp-LICENSE.txt", None),
    ]
    module = extract(built_overlay.llama_archive, tmp_path) / "backends" / "libggml-cuda.so"
    patchelf = Patchelf(find_patchelf())
    assert patchelf.runpath(module) == ""  # it finds its libraries by soname, not by a path
    assert read_section(module.read_bytes(), ".symtab") is None  # stripped
    assert {"libggml-base.so.0", "libcudart.so.13", "libcuda.so.1"} <= set(patchelf.needed(module))
    licence = (tmp_path / "licenses" / "llama.cpp-LICENSE.txt").read_text()
    assert "MIT License" in licence


def test_the_bundles_ggml_loads_the_layers_module_beside_the_runtime_layer(
    built_overlay: BuiltOverlay, tmp_path: Path
) -> None:
    """The dev venv's llama_cpp (the bundle's portable build) loads the extracted module through
    GGML_BACKEND_PATH, with libcudart from the extracted runtime layer. Without a GPU, a stub
    driver whose cuInit fails (and a stand-in for the cuBLAS the test layer leaves out) lets it
    load: the CUDA backend registers, with no device."""
    module = extract(built_overlay.llama_archive, tmp_path / "llama") / "backends"
    module = module / "libggml-cuda.so"
    runtime = extract(built_overlay.runtime_archive, tmp_path / "runtime") / "lib"
    driver = tmp_path / "driver" / "lib"
    compile_stand_in_cublas(module, driver)
    compile_failing_libcuda(driver)
    code = (
        "from llamaship.native import load_ggml_backends, mapped_llama_libraries\n"
        "loaded = load_ggml_backends()\n"
        "print(loaded.backends, loaded.devices)\n"
        "print(sorted(str(path) for path in mapped_llama_libraries()))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={
            **os.environ,
            "GGML_BACKEND_PATH": str(module),
            "LD_LIBRARY_PATH": f"{runtime}{os.pathsep}{driver}",
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    registered, mapped = result.stdout.strip().splitlines()[-2:]
    assert registered == "('CPU', 'CUDA') ('CPU',)"
    assert str(module.resolve()) in mapped


def test_a_build_machine_runpath_is_removed_and_a_foreign_library_refused(
    cuda_module: Path, tmp_path: Path
) -> None:
    patchelf = Patchelf(find_patchelf())
    raw = tmp_path / "raw" / "libggml-cuda.so"
    raw.parent.mkdir()
    shutil.copyfile(cuda_module, raw)
    patchelf.set_runpath(raw, "/home/builder/cublas/lib:/home/builder/stubs")
    staged, _ = stage_cuda_layer(raw, tmp_path / "layer", patchelf)
    assert patchelf.runpath(staged) == ""
    assert b"/home/builder" not in staged.read_bytes()
    subprocess.run([str(patchelf.executable), "--add-needed", "libfoo.so.3", str(raw)], check=True)
    with pytest.raises(BuildError, match=r"it links libfoo\.so\.3, which neither the bundle"):
        stage_cuda_layer(raw, tmp_path / "again", patchelf)


def test_the_module_comes_out_of_a_wheels_bin_else_its_package(tmp_path: Path) -> None:
    def wheel(name: str, members: dict[str, bytes]) -> Path:
        path = tmp_path / name
        with zipfile.ZipFile(path, "w") as archive:
            for member, data in members.items():
                archive.writestr(member, data)
        return path

    both = wheel(
        "both.whl",
        {"bin/libggml-cuda.so": b"bin", "llama_cpp/lib/libggml-cuda.so": b"package"},
    )
    assert module_from_wheel(both, tmp_path / "a").read_bytes() == b"bin"
    package = wheel("package.whl", {"llama_cpp/lib/libggml-cuda.so": b"package"})
    assert module_from_wheel(package, tmp_path / "b").read_bytes() == b"package"
    cpu = wheel("cpu.whl", {"llama_cpp/lib/libggml-cpu-x64.so": b"cpu"})
    with pytest.raises(BuildError, match=r"holds no libggml-cuda\.so .*-DGGML_CUDA=ON"):
        module_from_wheel(cpu, tmp_path / "c")


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
    built_overlay: BuiltOverlay, cuda_module: Path, cudart_wheel: Path, tmp_path: Path
) -> None:
    again = build_again(built_overlay, cuda_module, cudart_wheel, tmp_path)
    for path in again:
        assert path.read_bytes() == (built_overlay.out_dir / path.name).read_bytes(), path.name
    assert not list(tmp_path.glob(".staging-*")), "staging directory left behind"


def test_missing_runtime_library_is_named(
    built_overlay: BuiltOverlay, cuda_module: Path, cudart_wheel: Path, tmp_path: Path
) -> None:
    with pytest.raises(BuildError, match=r"libcublas\.so\.13") as raised:
        build_overlay(
            cuda_module,
            tmp_path,
            llama_cpp_version="0.3.36",
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


def test_not_a_backend_module_and_bad_key_are_refused(
    built_overlay: BuiltOverlay, cudart_wheel: Path, tmp_path: Path
) -> None:
    options: dict[str, Any] = {
        "llama_cpp_version": "0.3.36",
        "cuda_version": "13.0",
        "min_driver": MIN_DRIVER,
        "min_vram_mb": 1024,
        "serial": 7,
        "overlay_version": OVERLAY_VERSION,
        "runtime_wheels": [cudart_wheel],
    }
    with zipfile.ZipFile(cudart_wheel) as wheel:
        cudart = tmp_path / "libcudart.so.13"
        cudart.write_bytes(wheel.read("nvidia/cu13/lib/libcudart.so.13"))
    out_dir = tmp_path / "out"
    with pytest.raises(BuildError, match="exports no ggml_backend_init"):
        build_overlay(cudart, out_dir, signing_key_b64=built_overlay.keys.private, **options)
    with pytest.raises(BuildError, match="neither an ELF nor a PE file"):
        build_overlay(cudart_wheel, out_dir, signing_key_b64=None, **options)
    with pytest.raises(SigningKeyError):
        build_overlay(cudart, out_dir, signing_key_b64="bm90IGEga2V5", **options)
    assert list(out_dir.iterdir()) == []


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
    written = write_release_index(
        out_dir,
        [manifests],
        serial=7,
        signing_key_b64=built_overlay.keys.private,
        base_url="https://releases.example.invalid/llamaship/",
        created=CREATED,
    )
    list_path, list_signature, index_path, signature_path = written
    try:
        assert [path.name for path in written] == [
            "overlays.json",
            "overlays.json.sig",
            "releases.json",
            "releases.json.sig",
        ]
        data = index_path.read_bytes()
        verify(data, signature_path.read_bytes(), [built_overlay.keys.public])
        listing = list_path.read_bytes()
        verify(listing, list_signature.read_bytes(), [built_overlay.keys.public])
        index = parse_index(data)
        pinned = index.overlays
        assert (pinned.size, pinned.sha256, pinned.serial) == (
            len(listing),
            hashlib.sha256(listing).hexdigest(),
            7,
        )
        (entry,) = published_entries(index_path)
        assert (index.serial, entry.overlay_version, entry.serial) == (7, OVERLAY_VERSION, 7)
        llama = parse_manifest(manifests[1].read_bytes())
        assert llama.glibc_floor is not None and llama.glibcxx_floor is not None
        assert (entry.kind, entry.glibc_floor) == ("cuda", llama.glibc_floor)
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
        assert published_entries(index_path)[0].layer("llama-cuda").manifest == manifests[1].name
    finally:
        for path in written:
            path.unlink(missing_ok=True)


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

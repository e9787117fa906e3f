"""The llama-vulkan layer: one backend module (ELF or PE) checked, packed, signed and described.

ELF modules are compiled here with `cc`; PE modules are generated (pe_kit) or taken from a real
Windows program in setuptools' wheel."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
import setuptools
import zstandard

from llamaship_build.backend_module import (
    BACKEND_ENTRY,
    ELF_FORMAT,
    PE_FORMAT,
    check_backend_module,
    inspect_module,
)
from llamaship_build.elf import Patchelf, find_patchelf
from llamaship_build.errors import BuildError
from llamaship_build.pe import is_pe, read_pe
from llamaship_build.vulkan_layer import VulkanLayerTarget, build_vulkan_layer
from llamaship_contract.overlay import parse_manifest
from llamaship_contract.signing import generate_keypair, verify
from pe_kit import pe_image

CREATED = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
# strdup: a libc symbol with a version (GLIBC_2.2.5), so the module has a glibc floor.
BACKEND = (
    "#include <string.h>\n"
    f"int {BACKEND_ENTRY}(void) {{ return 0; }}\n"
    "char *copy(const char *text) { return strdup(text); }\n"
)


def _cc(tmp_path: Path, name: str, body: str, *flags: str) -> Path:
    compiler = shutil.which("cc")
    if compiler is None:
        pytest.fail("a C compiler (cc) is needed: apt-get install gcc")
    source = tmp_path / f"{name}.c"
    source.write_text(body)
    library = tmp_path / name
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O0", "-o", str(library), str(source), *flags],
        check=True,
    )
    return library


def _stub_library(tmp_path: Path, soname: str) -> list[str]:
    """Link flags for a library named `soname` (a stand-in for the driver's Vulkan loader)."""
    directory = tmp_path / f"stub-{soname}"
    directory.mkdir()
    _cc(
        directory,
        f"lib{soname.split('.')[0][3:]}.so",
        "int vk(void) { return 1; }\n",
        f"-Wl,-soname,{soname}",
    )
    return [f"-L{directory}", f"-l{soname.split('.')[0][3:]}", f"-Wl,-rpath,{directory}"]


def _module(tmp_path: Path, body: str = BACKEND, *links: str) -> Path:
    """libggml-vulkan.so linking the stand-in libvulkan.so.1, built with a scratch RUNPATH."""
    return _cc(
        tmp_path,
        "libggml-vulkan.so",
        body + "int vk(void);\nint use_loader(void) { return vk(); }\n",
        "-Wl,--no-as-needed",  # keep every -l as DT_NEEDED, used or not
        *_stub_library(tmp_path, "libvulkan.so.1"),
        *links,
    )


def _target(platform: str = "linux_x86_64", glibc_floor: str = "2.31") -> VulkanLayerTarget:
    return VulkanLayerTarget(
        overlay_version="0.3.36-vulkan-7",
        serial=7,
        llama_cpp_version="0.3.36",
        platform=platform,
        shader_features=("coopmat", "integer_dot"),
        glibc_floor=glibc_floor,
    )


def test_an_elf_module_states_what_it_links_and_exports(tmp_path: Path) -> None:
    module = _module(tmp_path)
    info = inspect_module(module)
    assert info.format == ELF_FORMAT
    assert "libvulkan.so.1" in info.needed and "libc.so.6" in info.needed
    assert BACKEND_ENTRY in info.exports and "use_loader" in info.exports
    check_backend_module(module, info)


def test_a_module_that_cannot_ship_alone_is_refused_with_every_reason(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    hidden = BACKEND.replace("int ggml", '__attribute__((visibility("hidden"))) int ggml')
    module = _module(other, hidden, *_stub_library(tmp_path, "libfoo.so.3"))
    info = inspect_module(module)
    assert BACKEND_ENTRY not in info.exports  # hidden symbols are not exported
    with pytest.raises(BuildError) as raised:
        check_backend_module(module, info)
    message = str(raised.value)
    assert f"exports no {BACKEND_ENTRY}" in message
    assert "it links libfoo.so.3, which neither the bundle" in message
    assert "libvulkan.so.1" not in message  # the driver provides the loader


def test_a_pe_module_is_judged_by_its_imports_and_exports(tmp_path: Path) -> None:
    dll = tmp_path / "ggml-vulkan.dll"
    dll.write_bytes(
        pe_image(
            imports={
                "ggml-base.dll": ["ggml_backend_reg_dev_get"],
                "vulkan-1.dll": ["vkGetInstanceProcAddr"],
                "KERNEL32.dll": ["GetLastError"],  # the loader ignores case
                "api-ms-win-crt-runtime-l1-1-0.dll": ["_initterm"],
                "MSVCP140.dll": ["?_Xlength_error@std@@YAXPEBD@Z"],
            },
            exports=["ggml_backend_score", BACKEND_ENTRY],
            name=dll.name,
        )
    )
    assert is_pe(dll)
    info = inspect_module(dll)
    assert info.format == PE_FORMAT
    assert info.needed[:3] == ("ggml-base.dll", "vulkan-1.dll", "KERNEL32.dll")
    assert info.exports == {"ggml_backend_score", BACKEND_ENTRY}
    check_backend_module(dll, info)
    greedy = tmp_path / "greedy.dll"
    greedy.write_bytes(
        pe_image(imports={"vulkan-1.dll": ["vkCreateInstance"], "d3d12.dll": ["D3D12Create"]})
    )
    with pytest.raises(BuildError, match=r"exports no ggml_backend_init.*links d3d12\.dll"):
        check_backend_module(greedy, inspect_module(greedy))


def test_a_real_windows_program_is_read_and_refused_as_a_module(tmp_path: Path) -> None:
    launcher = Path(setuptools.__file__).parent / "cli-64.exe"  # a real MSVC-linked PE
    image = read_pe(launcher)
    assert image.machine == "x86_64" and not image.is_dll
    assert "KERNEL32.dll" in image.imports
    assert any(name.startswith("api-ms-win-crt-") for name in image.imports)
    with pytest.raises(BuildError, match="is a Windows program, not a DLL"):
        inspect_module(launcher)
    text = tmp_path / "notes.dll"
    text.write_text("MZ but nothing else")
    with pytest.raises(BuildError, match="neither an ELF nor a PE file"):
        inspect_module(text)


def _members(archive: Path) -> dict[str, tarfile.TarInfo]:
    with (
        open(archive, "rb") as raw,
        zstandard.ZstdDecompressor().stream_reader(raw) as stream,
        tarfile.open(fileobj=stream, mode="r|") as tar,
    ):
        return {member.name: member for member in tar}


def test_the_elf_layer_is_signed_and_states_api_features_and_floors(tmp_path: Path) -> None:
    private, public = generate_keypair()
    module = _module(tmp_path)
    patchelf = Patchelf(find_patchelf())
    assert str(tmp_path) in patchelf.runpath(module)  # the build's scratch RUNPATH
    out = tmp_path / "out"
    written = build_vulkan_layer(
        module, out, _target(), signing_key_b64=private, patchelf=patchelf, created=CREATED
    )
    archive, manifest_path, signature = written
    assert archive.name == "llama-vulkan-0.3.36-vulkan-7-linux_x86_64.tar.zst"
    data = manifest_path.read_bytes()
    verify(data, signature.read_bytes(), [public])
    manifest = parse_manifest(data, origin=str(manifest_path))
    assert (manifest.layer, manifest.kind, manifest.requires) == ("llama-vulkan", "vulkan", None)
    assert manifest.vulkan_api == "1.2"
    assert manifest.shader_features == ("coopmat", "integer_dot")
    assert manifest.glibc_floor is not None and manifest.glibcxx_floor is None  # C only
    assert manifest.cuda_version is None and not manifest.cuda_archs
    assert [entry.path for entry in manifest.files] == [
        "backends/libggml-vulkan.so",
        "licenses/llama.cpp-LICENSE.txt",
    ]
    members = _members(archive)
    assert sorted(members) == [entry.path for entry in manifest.files]
    assert members["backends/libggml-vulkan.so"].mode == 0o755
    assert manifest.archive.size == archive.stat().st_size
    staged = tmp_path / "staged.so"
    with (
        open(archive, "rb") as raw,
        zstandard.ZstdDecompressor().stream_reader(raw) as stream,
        tarfile.open(fileobj=stream, mode="r|") as tar,
    ):
        for member in tar:
            extracted = tar.extractfile(member)
            if member.name.startswith("backends/") and extracted is not None:
                staged.write_bytes(extracted.read())
    assert patchelf.runpath(staged) == "$ORIGIN"  # no build path travels
    assert not list(out.glob(".staging-*"))


def test_the_layer_is_reproducible(tmp_path: Path) -> None:
    module = _module(tmp_path)
    patchelf = Patchelf(find_patchelf())
    outputs = []
    for name in ("one", "two"):
        written = build_vulkan_layer(
            module,
            tmp_path / name,
            _target(),
            signing_key_b64=None,
            patchelf=patchelf,
            created=CREATED,
        )
        assert len(written) == 2  # unsigned: archive and manifest only
        outputs.append([path.read_bytes() for path in written])
    assert outputs[0] == outputs[1]


def test_a_module_above_the_glibc_floor_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"needs glibc 2\.\d+.*above the configured floor 2\.1"):
        build_vulkan_layer(
            _module(tmp_path),
            tmp_path / "out",
            _target(glibc_floor="2.1"),
            signing_key_b64=None,
            patchelf=Patchelf(find_patchelf()),
        )
    assert not list((tmp_path / "out").iterdir())


def test_a_windows_layer_packs_the_dll_without_elf_tools(tmp_path: Path) -> None:
    dll = tmp_path / "ggml-vulkan.dll"
    dll.write_bytes(
        pe_image(imports={"vulkan-1.dll": ["vkCreateInstance"]}, exports=[BACKEND_ENTRY])
    )
    archive, manifest_path = build_vulkan_layer(
        dll, tmp_path / "out", _target("win_amd64"), signing_key_b64=None, patchelf=None
    )
    manifest = parse_manifest(manifest_path.read_bytes(), origin=str(manifest_path))
    assert manifest.platform == "win_amd64" and manifest.glibc_floor is None
    assert manifest.files[0].path == "backends/ggml-vulkan.dll"
    assert manifest.files[0].size == dll.stat().st_size  # PE files are shipped as built
    assert archive.name.endswith("-win_amd64.tar.zst")

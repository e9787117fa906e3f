"""The Vulkan module's split build: shaders in Debian 13, C++ in Debian 11, one set of
shader-feature definitions for both, checked; and the real build (slow, root)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llamaship_build.errors import BuildError
from llamaship_build.llama_wheel import Pin
from llamaship_build.module_slot import BUILD_RECORD
from llamaship_build.vulkan_build import (
    MODULE,
    cached_module,
    check_definitions,
    glslc_stub,
    module_key,
    use_pregenerated,
)
from llamaship_build.vulkan_layer import shader_feature_names
from llamaship_build.vulkan_shaders import (
    definitions_of,
    feature_tests,
    header_version,
    installed_versions,
)

REPO = Path(__file__).resolve().parents[1]

# Verbatim from the pinned sdist's ggml/src/ggml-vulkan/CMakeLists.txt (llama-cpp-python 0.3.36).
FEATURE_TESTS = """
    test_shader_extension_support(
        "GL_KHR_cooperative_matrix"
        "${CMAKE_CURRENT_SOURCE_DIR}/vulkan-shaders/feature-tests/coopmat.comp"
        "GGML_VULKAN_COOPMAT_GLSLC_SUPPORT"
    )

    test_shader_extension_support(
        "GL_EXT_integer_dot_product"
        "${CMAKE_CURRENT_SOURCE_DIR}/vulkan-shaders/feature-tests/integer_dot.comp"
        "GGML_VULKAN_INTEGER_DOT_GLSLC_SUPPORT"
    )

    test_shader_extension_support(
        "GL_EXT_bfloat16"
        "${CMAKE_CURRENT_SOURCE_DIR}/vulkan-shaders/feature-tests/bfloat16.comp"
        "GGML_VULKAN_BFLOAT16_GLSLC_SUPPORT"
    )
"""
GENERATION = """\
    target_link_libraries(ggml-vulkan PRIVATE Vulkan::Vulkan)
    include(ExternalProject)

    ExternalProject_Add(
        vulkan-shaders-gen
        SOURCE_DIR ${CMAKE_CURRENT_SOURCE_DIR}/vulkan-shaders
    )
    foreach (file_full ${_ggml_vk_shader_files})
        add_custom_command(OUTPUT ${_ggml_vk_target_cpp} COMMAND ${_ggml_vk_genshaders_cmd})
    endforeach()

    source_group("Vulkan shaders" FILES ${_ggml_vk_shader_files})
else()
"""


def test_the_feature_tests_map_each_extension_to_its_definition() -> None:
    assert feature_tests(FEATURE_TESTS) == {
        "GL_KHR_cooperative_matrix": "GGML_VULKAN_COOPMAT_GLSLC_SUPPORT",
        "GL_EXT_integer_dot_product": "GGML_VULKAN_INTEGER_DOT_GLSLC_SUPPORT",
        "GL_EXT_bfloat16": "GGML_VULKAN_BFLOAT16_GLSLC_SUPPORT",
    }
    with pytest.raises(BuildError, match="runs no glslc feature test"):
        feature_tests("find_package(Vulkan COMPONENTS glslc REQUIRED)\n")


def test_the_stub_glslc_answers_the_feature_tests_as_the_real_one_did(tmp_path: Path) -> None:
    stub = tmp_path / "glslc"
    stub.write_text(glslc_stub(["GL_EXT_bfloat16"]))
    stub.chmod(0o755)
    # CMake's test: the extension is off when stderr says "extension not supported: <name>".
    result = subprocess.run(
        [str(stub), "-o", "-", "-fshader-stage=compute", "coopmat.comp"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "extension not supported: GL_EXT_bfloat16" in result.stderr
    assert "extension not supported: GL_KHR_cooperative_matrix" not in result.stderr
    assert result.returncode != 0  # it compiles nothing: a shader build through it fails
    assert ";" not in result.stderr  # CMake tests the output unquoted: ";" would split it


def test_the_shader_generation_block_is_replaced_by_the_pregenerated_sources() -> None:
    patched = use_pregenerated(FEATURE_TESTS + GENERATION)
    assert "ExternalProject_Add" not in patched and "add_custom_command" not in patched
    assert "${LLAMASHIP_VULKAN_SHADERS}/ggml-vulkan-shaders.hpp" in patched
    assert patched.startswith(FEATURE_TESTS)  # the feature tests still run (against the stub)
    assert 'source_group("Vulkan shaders"' in patched
    assert "target_link_libraries(ggml-vulkan PRIVATE Vulkan::Vulkan)" in patched
    with pytest.raises(BuildError, match="no longer has one shader generation block"):
        use_pregenerated(FEATURE_TESTS)
    with pytest.raises(BuildError, match="no longer has one shader generation block"):
        use_pregenerated(GENERATION + GENERATION)


def _compile_commands(path: Path, *commands: tuple[str, str]) -> Path:
    entries = [
        {"directory": "/b", "file": source, "command": command} for source, command in commands
    ]
    path.write_text(json.dumps(entries))
    return path


def test_the_definitions_are_read_from_the_modules_compile_command(tmp_path: Path) -> None:
    vulkan = "/s/ggml/src/ggml-vulkan/ggml-vulkan.cpp"
    commands = _compile_commands(
        tmp_path / "compile_commands.json",
        (
            vulkan,
            "c++ -DGGML_BACKEND_DL -DGGML_VULKAN_INTEGER_DOT_GLSLC_SUPPORT "
            "-DGGML_VULKAN_COOPMAT_GLSLC_SUPPORT -DGGML_VULKAN_COOPMAT_GLSLC_SUPPORT_X=1 -c x",
        ),
        ("/s/ggml/src/ggml.c", "cc -DGGML_VULKAN_BFLOAT16_GLSLC_SUPPORT -c ggml.c"),
    )
    assert definitions_of(commands) == (
        "GGML_VULKAN_COOPMAT_GLSLC_SUPPORT",
        "GGML_VULKAN_INTEGER_DOT_GLSLC_SUPPORT",
    )
    twice = _compile_commands(tmp_path / "twice.json", (vulkan, "c++"), (vulkan, "c++"))
    with pytest.raises(BuildError, match=r"2 compile commands for ggml-vulkan/ggml-vulkan\.cpp"):
        definitions_of(twice)


def test_the_cxx_must_get_exactly_the_shaders_definitions() -> None:
    shaders = ("GGML_VULKAN_COOPMAT_GLSLC_SUPPORT", "GGML_VULKAN_INTEGER_DOT_GLSLC_SUPPORT")
    check_definitions(shaders, tuple(reversed(shaders)))
    with pytest.raises(BuildError, match="missing: GGML_VULKAN_INTEGER_DOT_GLSLC_SUPPORT; extra"):
        check_definitions(shaders, shaders[:1])
    with pytest.raises(BuildError, match="extra: GGML_VULKAN_BFLOAT16_GLSLC_SUPPORT"):
        check_definitions(shaders, (*shaders, "GGML_VULKAN_BFLOAT16_GLSLC_SUPPORT"))


def test_shader_features_are_named_after_their_definitions() -> None:
    assert shader_feature_names(
        ("GGML_VULKAN_INTEGER_DOT_GLSLC_SUPPORT", "GGML_VULKAN_COOPMAT2_GLSLC_SUPPORT")
    ) == ("coopmat2", "integer_dot")
    with pytest.raises(BuildError, match="GGML_CUDA is not a ggml-vulkan shader-feature"):
        shader_feature_names(("GGML_CUDA",))


def test_tool_versions_come_from_the_roots_dpkg_database(tmp_path: Path) -> None:
    status = tmp_path / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True)
    status.write_text(
        "Package: glslc\nStatus: install ok installed\nVersion: 2025.2-1\n"
        "Description: a compiler\n with a continuation line: 1\n\n"
        "Package: libvulkan-dev\nStatus: install ok installed\nArchitecture: amd64\n"
        "Version: 1.4.309.0-1\n\n"
        "Package: spirv-headers\nStatus: deinstall ok config-files\nVersion: 1.6.1\n\n"
        "Package: bash\nStatus: install ok installed\nVersion: 5.2\n"
    )
    assert installed_versions(tmp_path) == {"glslc": "2025.2-1", "libvulkan-dev": "1.4.309.0-1"}


def test_the_header_version_is_read_from_vulkan_core_h(tmp_path: Path) -> None:
    core = tmp_path / "vulkan/vulkan_core.h"
    core.parent.mkdir()
    core.write_text(
        "#define VK_HEADER_VERSION 309\n"
        "#define VK_HEADER_VERSION_COMPLETE VK_MAKE_API_VERSION(0, 1, 4, VK_HEADER_VERSION)\n"
    )
    assert header_version(tmp_path) == "1.4.309"
    core.write_text("/* not the Vulkan headers */\n")
    with pytest.raises(BuildError, match="names no VK_HEADER_VERSION"):
        header_version(tmp_path)


def test_the_cache_key_covers_the_sdist_and_the_shader_tools(tmp_path: Path) -> None:
    pin = Pin("0.3.36", ("a" * 64,))
    tools = {"glslc": "2025.2-1", "libvulkan-dev": "1.4.309.0-1"}
    key = module_key(pin, "debian11", tools)
    assert key == module_key(pin, "debian11", dict(reversed(tools.items())))
    assert key != module_key(Pin("0.3.36", ("b" * 64,)), "debian11", tools)
    assert key != module_key(pin, "debian11", {**tools, "glslc": "2025.3-1"})
    assert key != module_key(pin, "host", tools)
    slot = tmp_path / "vulkan" / key
    slot.mkdir(parents=True)
    (slot / MODULE).write_bytes(b"\x7fELF")
    assert cached_module(tmp_path, key) is None  # no build record: an interrupted build
    (slot / BUILD_RECORD).write_text(
        json.dumps({"shaders": {"definitions": ["GGML_VULKAN_COOPMAT_GLSLC_SUPPORT"]}})
    )
    cached = cached_module(tmp_path, key)
    assert cached is not None and cached.definitions == ("GGML_VULKAN_COOPMAT_GLSLC_SUPPORT",)


@pytest.mark.slow
@pytest.mark.root
def test_the_vulkan_layer_is_built_from_the_pinned_sdist_in_two_roots(tmp_path: Path) -> None:
    """Cold: the Debian 13 root (about 4 min), the shaders (2.5-9 min) and the C++ (1-1.5
    min) on 2 cores; then cached. The signed layer states what was compiled in, stays small."""
    from llamaship_contract.overlay import parse_manifest
    from llamaship_contract.signing import generate_keypair, verify

    private, public = generate_keypair()
    key_file = tmp_path / "key"
    key_file.write_text(private)
    out = tmp_path / "out"
    result = subprocess.run(
        [
            *(sys.executable, "-m", "llamaship_build", "overlay-vulkan", "--serial", "7"),
            *("--out", str(out), "--key-file", str(key_file)),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    manifest_path = next(out.glob("llama-vulkan-*-linux_x86_64.json"))
    data = manifest_path.read_bytes()
    verify(data, manifest_path.with_name(manifest_path.name + ".sig").read_bytes(), [public])
    manifest = parse_manifest(data, origin=str(manifest_path))
    assert manifest.layer == "llama-vulkan" and manifest.vulkan_api == "1.2"
    assert {"coopmat", "integer_dot", "bfloat16"} <= set(manifest.shader_features)
    assert manifest.glibc_floor is not None
    assert tuple(map(int, manifest.glibc_floor.split("."))) <= (2, 31)
    assert [entry.path for entry in manifest.files] == [
        "backends/libggml-vulkan.so",
        "licenses/llama.cpp-LICENSE.txt",
    ]
    assert manifest.archive.size <= 8_000_000

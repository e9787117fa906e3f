"""A signed Vulkan overlay release built by the real pipeline: the pinned sdist's Vulkan backend
module (compiled once per machine in the Debian roots, cached) packed into the llama-vulkan
layer, signed with the tests' release key, behind a signed index."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fixtures_overlay import KeyPair
from fixtures_release import Release
from llamaship_build.elf import Patchelf, find_patchelf
from llamaship_build.llama_wheel import Pin
from llamaship_build.project import Project, cache_dir
from llamaship_build.release_index import write_release_index
from llamaship_build.settings import BuildSettings
from llamaship_build.toolchain import default_toolchain
from llamaship_build.vulkan_build import ensure_vulkan_module
from llamaship_build.vulkan_layer import (
    VulkanLayerTarget,
    build_vulkan_layer,
    shader_feature_names,
)
from llamaship_build.vulkan_shaders import ensure_shader_root


@pytest.fixture(scope="session")
def vulkan_release(tmp_path_factory: pytest.TempPathFactory, signing_keys: KeyPair) -> Release:
    """The llama-vulkan layer of this checkout's pinned llama.cpp, signed, with releases.json."""
    pin = Pin.from_lock(Project.here().requirements / "cpu.txt")
    cache = cache_dir()
    built = ensure_vulkan_module(
        pin, cache, default_toolchain(), ensure_shader_root(cache), jobs=os.cpu_count() or 1
    )
    settings = BuildSettings.resolve(os.environ)
    directory = tmp_path_factory.mktemp("vulkan-release")
    written = build_vulkan_layer(
        built.path,
        directory,
        VulkanLayerTarget(
            overlay_version=f"{pin.version}-vulkan-5",
            serial=5,
            llama_cpp_version=pin.version,
            platform="linux_x86_64",
            shader_features=shader_feature_names(built.definitions),
            glibc_floor=settings.glibc_floor,
            glibcxx_floor=settings.glibcxx_floor,
        ),
        signing_key_b64=signing_keys.private,
        patchelf=Patchelf(find_patchelf()),
    )
    manifests = [path for path in written if path.suffix == ".json"]
    write_release_index(directory, [manifests], 5, signing_keys.private, "")
    return Release(directory, signing_keys.public)


def vulkan_archive(release: Release) -> Path:
    """The layer's archive in `release`."""
    (archive,) = Path(release.directory).glob("llama-vulkan-*.tar.zst")
    return archive

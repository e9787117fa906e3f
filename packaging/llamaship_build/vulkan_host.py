"""The Vulkan backend module compiled on this machine: `ggml-vulkan.dll` on the Windows release
runner, with the Vulkan SDK (its glslc has every shader feature) and MSVC.

Same pinned sdist and flags as the Linux module (`vulkan_build.VULKAN_FLAGS`), one CMake run
with the Ninja generator, so `compile_commands.json` holds the definitions the shader feature
tests gave the C++ (`GGML_VULKAN_*_GLSLC_SUPPORT`): the layer's `shader_features` are read from
there, never typed by hand. Run it from an MSVC developer prompt (`vcvars64.bat`) with the SDK's
`VULKAN_SDK` set; CMake finds both.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from llamaship_build.errors import BuildError
from llamaship_build.llama_wheel import Pin, build_env, download_sdist, unpack_sdist
from llamaship_build.toolchain import HOST
from llamaship_build.vulkan_build import VULKAN_FLAGS
from llamaship_build.vulkan_layer import shader_feature_names
from llamaship_build.vulkan_shaders import definitions_of

MODULES = {"win32": "ggml-vulkan.dll", "darwin": "libggml-vulkan.dylib"}


def module_name(platform: str = sys.platform) -> str:
    """The backend module's file name on `platform`."""
    return MODULES.get(platform, "libggml-vulkan.so")


def build_host_module(pin: Pin, out_dir: Path, jobs: int) -> tuple[Path, tuple[str, ...]]:
    """Compile the module here into `out_dir`; returns it and the shader features compiled in."""
    name = module_name()
    with HOST.scratch() as scratch:
        python = build_env(pin, scratch, HOST)
        source = unpack_sdist(download_sdist(pin, scratch, HOST, python), scratch / "src")
        build = scratch / "build"
        cmake = str(Path(python).parent / ("cmake.exe" if sys.platform == "win32" else "cmake"))
        HOST.run(
            [
                cmake,
                "-S",
                str(source),
                "-B",
                str(build),
                "-G",
                "Ninja",
                "-DCMAKE_BUILD_TYPE=Release",
                "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON",
                *VULKAN_FLAGS,
            ],
            what="configuring the Vulkan backend with this machine's Vulkan SDK",
        )
        features = shader_feature_names(definitions_of(build / "compile_commands.json"))
        HOST.run(
            [cmake, "--build", str(build), "--target", "ggml-vulkan", f"-j{jobs}"],
            what=f"compiling the Vulkan backend (shader features: {', '.join(features)})",
        )
        found = sorted(build.rglob(name))
        if len(found) != 1:
            msg = f"the Vulkan build left {len(found)} {name} in {build}, not 1"
            raise BuildError(msg)
        out_dir.mkdir(parents=True, exist_ok=True)
        module = out_dir / name
        shutil.copyfile(found[0], module)
    return module, features

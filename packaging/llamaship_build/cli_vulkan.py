"""`python -m llamaship_build overlay-vulkan`: the signed `llama-vulkan` layer.

On Linux the Vulkan backend module is compiled (or taken from the cache) from the bundle's own
pinned sdist: shaders in the Debian 13 root, C++ in the Debian 11 root. Elsewhere (the Windows
release runner, with the Vulkan SDK) `--module` names a module built there and
`--shader-features` the features its CMake reported.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from llamaship_build.backend_module import ELF_FORMAT, inspect_module
from llamaship_build.errors import BuildError
from llamaship_build.llama_wheel import Pin
from llamaship_build.project import Project, cache_dir
from llamaship_build.settings import BuildSettings

# The platform tag of the bundles a module of each format serves (x86-64 only today).
_PLATFORM_OF_FORMAT = {"ELF": "linux_x86_64", "PE": "win_amd64"}


def _compiled_module(pin: Pin) -> tuple[Path, tuple[str, ...]]:
    from llamaship_build.toolchain import default_toolchain
    from llamaship_build.vulkan_build import ensure_vulkan_module
    from llamaship_build.vulkan_layer import shader_feature_names
    from llamaship_build.vulkan_shaders import ensure_shader_root

    if sys.platform == "win32":  # the release runner: MSVC and the Vulkan SDK (docs/vulkan.md)
        from llamaship_build.vulkan_host import build_host_module

        return build_host_module(pin, cache_dir() / "vulkan-host", os.cpu_count() or 1)
    if sys.platform != "linux" or os.geteuid() != 0:
        msg = (
            "the Vulkan module is compiled on Linux as root (two Debian roots, chroot); on "
            "another system pass --module with a module built there (the Vulkan SDK)"
        )
        raise BuildError(msg)
    cache = cache_dir()
    built = ensure_vulkan_module(
        pin, cache, default_toolchain(), ensure_shader_root(cache), jobs=os.cpu_count() or 1
    )
    return built.path, shader_feature_names(built.definitions)


def _overlay_vulkan(args: argparse.Namespace, project: Project) -> int:
    from llamaship_build.elf import Patchelf, find_patchelf
    from llamaship_build.overlay_release import default_serial
    from llamaship_build.vulkan_layer import VulkanLayerTarget, build_vulkan_layer
    from llamaship_contract.signing import load_signing_key

    key = None if args.unsigned else load_signing_key(args.key_file, os.environ)
    pin = Pin.from_lock(project.requirements / "cpu.txt")
    if args.module is None:
        if args.shader_features:
            msg = "--shader-features goes with --module (a compiled module records its own)"
            raise BuildError(msg)
        module, features = _compiled_module(pin)
    else:
        module = args.module
        features = tuple(sorted(filter(None, args.shader_features.split(","))))
    module_format = inspect_module(module).format
    settings = BuildSettings.resolve(os.environ)
    serial = args.serial or default_serial()
    target = VulkanLayerTarget(
        overlay_version=f"{pin.version}-vulkan-{serial}",
        serial=serial,
        llama_cpp_version=pin.version,
        platform=_PLATFORM_OF_FORMAT[module_format.name],
        shader_features=features,
        glibc_floor=settings.glibc_floor,
        glibcxx_floor=settings.glibcxx_floor,
    )
    written = build_vulkan_layer(
        module,
        args.out or project.dist / "overlay",
        target,
        signing_key_b64=key,
        patchelf=Patchelf(find_patchelf()) if module_format == ELF_FORMAT else None,
        compression_level=args.level,
    )
    for path in written:
        print(path)
    return 0


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this group's commands to `python -m llamaship_build`."""
    vulkan = commands.add_parser(
        "overlay-vulkan", help="build the signed llama-vulkan layer (the Vulkan backend module)"
    )
    vulkan.add_argument(
        "--module",
        type=Path,
        help="a backend module built elsewhere (ggml-vulkan.dll from the Vulkan SDK build); "
        "default: compile libggml-vulkan.so here (Linux, root)",
    )
    vulkan.add_argument(
        "--shader-features",
        default="",
        help="with --module: the shader features compiled in, comma-separated "
        "(coopmat,coopmat2,integer_dot,bfloat16: CMake's 'supported by glslc' lines)",
    )
    vulkan.add_argument("--out", type=Path, help="output folder (default: dist/overlay)")
    vulkan.add_argument("--serial", type=int, help="release serial (default: epoch seconds)")
    vulkan.add_argument("--level", type=int, default=19, help="zstd compression level")
    vulkan.add_argument(
        "--key-file", type=Path, help="signing key file (default: $LLAMASHIP_SIGNING_KEY)"
    )
    vulkan.add_argument(
        "--unsigned",
        action="store_true",
        help="write no manifest signature (`sign-release` adds it later)",
    )
    vulkan.set_defaults(handler=_overlay_vulkan)

"""The Vulkan backend's shaders, generated with a current `glslc` in a Debian 13 root.

The C++ of the Vulkan backend is compiled in the Debian 11 root (glibc 2.31), which has no
`glslc` and only Vulkan 1.2.162 headers. SPIR-V does not depend on the platform, so the shader
step runs in a second root, Debian 13 (trixie: Vulkan headers 1.4.309; glslc from sid, see
`GLSLC_PACKAGES`): there
ggml's own CMake configures the backend with the same flags, asks `glslc` which shader
extensions it has (`test_shader_extension_support`), builds `vulkan-shaders-gen` and runs it,
and only the generated sources (`ggml-vulkan-shaders.hpp` and one `<shader>.comp.cpp` per
shader, SPIR-V as byte arrays) are built. What comes out:

- the generated sources;
- the C++ definitions CMake derived from the feature tests (`GGML_VULKAN_*_GLSLC_SUPPORT`), read
  from the compile command of `ggml-vulkan.cpp`: the C++ must be compiled with exactly these
  (`vulkan_build` checks it);
- an SDK folder for the Debian 11 compile: the Vulkan and SPIR-V headers, SPIRV-Headers' CMake
  package and `libvulkan.so` to link against (the user's driver provides it at run time);
- the versions of the tools used, read from the root's dpkg database.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from llamaship_build.debian_root import DebianRoot, remove_root
from llamaship_build.debian_root_create import MIRROR
from llamaship_build.errors import BuildError
from llamaship_build.llama_wheel import unpack_sdist
from llamaship_build.toolchain import HOST

_log = logging.getLogger(__name__)

SUITE = "trixie"
PACKAGES = ("glslc", "cmake", "ninja-build", "g++", "make", "libvulkan-dev", "spirv-headers")
# glslc itself comes from sid: trixie's shaderc 2025.2 (glslang 15.1) lacks GL_EXT_bfloat16 and
# the fp8/fp4 types, and CMake would silently build without them. sid's runs on trixie's glibc
# and needs nothing else from sid. Pinned below trixie, so only these two come from there.
GLSLC_SUITE = "sid"
GLSLC_PACKAGES = ("glslc", "libshaderc1")
_GLSLC_SOURCES = (
    # sid's Release file has a short Valid-Until and mirrors lag: still signed and checked.
    f"deb [check-valid-until=no] {MIRROR} {GLSLC_SUITE} main\n"
)
_GLSLC_PIN = f"Package: *\nPin: release n={GLSLC_SUITE}\nPin-Priority: 100\n"
# The packages whose versions decide the generated shaders and the headers compiled against.
TOOL_PACKAGES = ("glslc", "libshaderc1", "glslang-tools", "libvulkan-dev", "spirv-headers")
# Bump when the recipe of the root changes: it is rebuilt under a new name.
_RECIPE = 2
VULKAN_SOURCE_DIR = "vendor/llama.cpp/ggml/src/ggml-vulkan"
HEADER = "ggml-vulkan-shaders.hpp"
RECORD = "shaders.json"
_GNU_TRIPLET = "x86_64-linux-gnu"
_FEATURE_TEST = re.compile(
    r'test_shader_extension_support\(\s*"(\w+)"\s*"[^"]*"\s*"(GGML_VULKAN_\w+_GLSLC_SUPPORT)"\s*\)'
)
_DEFINITION = re.compile(r"(?:^|\s)-D(GGML_VULKAN_\w+_GLSLC_SUPPORT)(?=\s|=|$)")
_HEADER_VERSION = re.compile(
    r"#define\s+VK_HEADER_VERSION_COMPLETE\s+VK_MAKE_API_VERSION\("
    r"\s*0\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*VK_HEADER_VERSION\s*\)"
)
_HEADER_PATCH = re.compile(r"#define\s+VK_HEADER_VERSION\s+(\d+)")
_GENERATED = re.compile(r"^\S*/ggml-vulkan/([\w.-]+\.comp\.cpp|ggml-vulkan-shaders\.hpp):")
_APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}
# The root's commands get GCC: the Debian 11 toolchain's clang-16 is not installed here.
_GCC = {"CC": "gcc", "CXX": "g++"}


@dataclass(frozen=True)
class ShaderSet:
    """Generated shader sources, the definitions they need, an SDK folder and tool versions."""

    sources: Path
    sdk: Path
    definitions: tuple[str, ...]
    extensions: Mapping[str, bool]
    tools: Mapping[str, str]

    def record(self) -> dict[str, object]:
        """What the shaders were built with, for the build record and the manifest."""
        return {
            "definitions": list(self.definitions),
            "extensions": dict(sorted(self.extensions.items())),
            "tools": dict(sorted(self.tools.items())),
        }


def feature_tests(cmakelists: str) -> dict[str, str]:
    """ggml-vulkan's glslc feature tests: shader extension -> the C++ definition it turns on."""
    tests = dict(_FEATURE_TEST.findall(cmakelists))
    if not tests:
        msg = (
            f"{VULKAN_SOURCE_DIR}/CMakeLists.txt runs no glslc feature test "
            "(test_shader_extension_support): this llama.cpp is not the one the Vulkan build "
            "was written for; update vulkan_shaders.py"
        )
        raise BuildError(msg)
    return tests


def definitions_of(
    compile_commands: Path, source: str = "ggml-vulkan/ggml-vulkan.cpp"
) -> tuple[str, ...]:
    """The `GGML_VULKAN_*_GLSLC_SUPPORT` definitions of `source`'s compile command, sorted."""
    entries = json.loads(compile_commands.read_text(encoding="utf-8"))
    commands = [
        str(entry.get("command") or " ".join(entry.get("arguments", ())))
        for entry in entries
        if str(entry.get("file", "")).endswith(source)
    ]
    if len(commands) != 1:
        msg = f"{compile_commands} has {len(commands)} compile commands for {source}, not 1"
        raise BuildError(msg)
    return tuple(sorted(set(_DEFINITION.findall(commands[0]))))


def installed_versions(root: Path, packages: tuple[str, ...] = TOOL_PACKAGES) -> dict[str, str]:
    """Versions of `packages` installed in the Debian root at `root` (from its dpkg database)."""
    versions: dict[str, str] = {}
    status = root / "var/lib/dpkg/status"
    for stanza in status.read_text(encoding="utf-8").split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " "
        )
        if fields.get("Package") in packages and "installed" in fields.get("Status", ""):
            versions[fields["Package"]] = fields.get("Version", "")
    return dict(sorted(versions.items()))


def header_version(include: Path) -> str:
    """The Vulkan headers' version, e.g. 1.4.309, from `vulkan/vulkan_core.h`."""
    text = (include / "vulkan" / "vulkan_core.h").read_text(encoding="utf-8")
    complete, patch = _HEADER_VERSION.search(text), _HEADER_PATCH.search(text)
    if complete is None or patch is None:
        msg = f"{include}/vulkan/vulkan_core.h names no VK_HEADER_VERSION: not Vulkan headers"
        raise BuildError(msg)
    return f"{complete.group(1)}.{complete.group(2)}.{patch.group(1)}"


def _recipe_key() -> str:
    material = json.dumps(
        {
            "suite": SUITE,
            "packages": PACKAGES,
            "glslc": [GLSLC_SUITE, *GLSLC_PACKAGES],
            "recipe": _RECIPE,
        }
    )
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def ensure_shader_root(cache: Path) -> DebianRoot:
    """The Debian 13 root with glslc, created on first use (about 3-4 minutes) and cached."""
    path = cache / "roots" / f"{SUITE}-glslc-{_recipe_key()}"
    if (path / ".llamaship-complete").is_file():
        return DebianRoot(path, name=f"debian13-glslc-{_recipe_key()}", python="/usr/bin/python3")
    if shutil.which("debootstrap") is None:
        msg = "debootstrap is missing: apt-get install debootstrap (the Vulkan shaders need it)"
        raise BuildError(msg)
    staging = path.with_name(path.name + ".partial")
    remove_root(staging)
    staging.parent.mkdir(parents=True, exist_ok=True)
    _log.info("creating the Debian 13 shader root in %s (once per machine)", path)
    HOST.run(
        ["debootstrap", "--force-check-gpg", "--variant=minbase", SUITE, str(staging), MIRROR],
        what=f"debootstrap Debian 13 ({SUITE}, about 2-3 minutes)",
    )
    (staging / "etc/apt/sources.list.d/glslc.list").write_text(_GLSLC_SOURCES)
    (staging / "etc/apt/preferences.d/glslc").write_text(_GLSLC_PIN)
    root = DebianRoot(staging)
    root.run(["apt-get", "update"], what="apt-get update in the Debian 13 root", env=_APT_ENV)
    install = ["apt-get", "install", "-y", "--no-install-recommends"]
    root.run(
        [*install, *PACKAGES],
        what="installing CMake, a compiler and the Vulkan headers in the Debian 13 root",
        env=_APT_ENV,
    )
    root.run(
        [*install, *(f"{package}/{GLSLC_SUITE}" for package in GLSLC_PACKAGES)],
        what=f"installing glslc from {GLSLC_SUITE} in the Debian 13 root",
        env=_APT_ENV,
    )
    (staging / ".llamaship-complete").write_text("")
    remove_root(path)
    os.replace(staging, path)
    return DebianRoot(path, name=f"debian13-glslc-{_recipe_key()}", python="/usr/bin/python3")


def _copy_sdk(root: Path, sdk: Path) -> None:
    """Headers, SPIRV-Headers' CMake package and the link library, laid out as a prefix."""
    include = root / "usr/include"
    for name in ("vulkan", "vk_video", "spirv"):
        shutil.copytree(include / name, sdk / "include" / name, symlinks=True)
    shutil.copytree(
        root / "usr/share/cmake/SPIRV-Headers", sdk / "share/cmake/SPIRV-Headers", symlinks=True
    )
    (sdk / "lib").mkdir(parents=True)
    # Only linked against (DT_NEEDED libvulkan.so.1): never shipped, the driver provides it.
    shutil.copyfile(root / "usr/lib" / _GNU_TRIPLET / "libvulkan.so.1", sdk / "lib/libvulkan.so")


def generate_shaders(
    sdist: Path, root: DebianRoot, cmake_args: tuple[str, ...], out: Path, jobs: int = 2
) -> ShaderSet:
    """Generate the shader sources of `sdist`'s Vulkan backend in `root` into `out`."""
    with root.scratch() as scratch:
        source = unpack_sdist(sdist, scratch / "src")
        build = scratch / "build"
        root.run(
            [
                "cmake",
                "-S",
                root.inside(source),
                "-B",
                root.inside(build),
                "-G",
                "Ninja",
                "-DCMAKE_BUILD_TYPE=Release",
                "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON",
                *cmake_args,
            ],
            what="configuring the Vulkan backend in the Debian 13 root (glslc feature tests)",
            env=_GCC,
        )
        listing = root.output(["ninja", "-C", root.inside(build), "-t", "targets", "all"])
        targets = sorted(
            {
                f"{VULKAN_SOURCE_DIR}/{match.group(1)}"
                for line in listing.splitlines()
                if (match := _GENERATED.match(line.strip()))
            }
        )
        shaders = sorted((source / VULKAN_SOURCE_DIR / "vulkan-shaders").glob("*.comp"))
        if len(targets) != len(shaders) + 1:
            msg = (
                f"the Vulkan build generates {len(targets)} sources for {len(shaders)} shaders "
                "(expected one per shader plus the header): update vulkan_shaders.py"
            )
            raise BuildError(msg)
        # The 156 targets go through a file: the logged command stays one short line.
        listed = scratch / "targets.txt"
        listed.write_text("\n".join(targets) + "\n")
        ninja = 'exec ninja -C "$1" -j"$2" $(cat "$3")'
        root.run(
            ["sh", "-c", ninja, "ninja", root.inside(build), str(jobs), root.inside(listed)],
            what=f"generating the Vulkan shaders with glslc ({len(shaders)} shader files)",
            env=_GCC,
        )
        definitions = definitions_of(build / "compile_commands.json")
        tests = feature_tests((source / VULKAN_SOURCE_DIR / "CMakeLists.txt").read_text())
        sources = out / "sources"
        sources.mkdir(parents=True)
        for target in targets:
            shutil.copyfile(build / target, sources / target.rsplit("/", 1)[1])
    sdk = out / "sdk"
    _copy_sdk(root.path, sdk)
    tools = {
        **installed_versions(root.path),
        "vulkan-headers": header_version(sdk / "include"),
    }
    shader_set = ShaderSet(
        sources=sources,
        sdk=sdk,
        definitions=definitions,
        extensions={extension: define in definitions for extension, define in tests.items()},
        tools=tools,
    )
    (out / RECORD).write_text(json.dumps(shader_set.record(), indent=2, sort_keys=True) + "\n")
    _log.info(
        "Vulkan shaders (glslc %s): compiled in: %s; left out: %s",
        tools.get("glslc", "?"),
        ", ".join(e for e, on in shader_set.extensions.items() if on) or "none",
        ", ".join(e for e, on in shader_set.extensions.items() if not on) or "none",
    )
    return shader_set

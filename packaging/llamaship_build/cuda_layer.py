"""The `llama-cuda` layer: the CUDA backend module alone, for the bundle's own ggml (Linux).

Layout: `backends/libggml-cuda.so` and `licenses/llama.cpp-LICENSE.txt`, like the Vulkan layer
(`vulkan_layer`). The module is stripped and its RUNPATH removed (a build leaves build-machine
folders there): it finds `libggml-base.so.0` already loaded by the bundle, the CUDA runtime
libraries preloaded from the `cuda-runtime` layer, and `libcuda.so.1` from the driver.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from llamaship_build.backend_module import (
    CUDA_ELF_FORMAT,
    ModuleInfo,
    check_backend_module,
    inspect_module,
)
from llamaship_build.elf import Patchelf
from llamaship_build.errors import BuildError
from llamaship_build.overlay_layers import (
    CUDA_MODULE,
    LICENSES_DIR,
    LLAMA_CPP_LICENSE,
    SYSTEM_LIBRARIES,
)
from llamaship_build.strip import strip_binaries

BACKENDS_DIR = "backends"
_BUNDLE_LIBRARIES = frozenset({"libggml-base.so.0"})


def runtime_needs(info: ModuleInfo) -> tuple[str, ...]:
    """The libraries the module links that neither the system, the driver nor the bundle
    provides: what the cuda-runtime layer must ship."""
    return tuple(sorted(set(info.needed) - SYSTEM_LIBRARIES - _BUNDLE_LIBRARIES))


def stage_cuda_layer(module: Path, root: Path, patchelf: Patchelf) -> tuple[Path, ModuleInfo]:
    """Lay out the layer of `module` under `root`; returns the staged module and what it links.

    Fails unless `module` is a CUDA backend module the bundle can load (`check_backend_module`).
    """
    info = inspect_module(module)
    if info.format.name != CUDA_ELF_FORMAT.name:
        msg = f"{module} is a {info.format.name} file: the CUDA overlay is built for Linux (ELF)"
        raise BuildError(msg)
    check_backend_module(module, info, CUDA_ELF_FORMAT)
    if not runtime_needs(info):
        msg = (
            f"{module.name} links no CUDA runtime library: it is not a CUDA build "
            "(build it with -DGGML_CUDA=ON)"
        )
        raise BuildError(msg)
    target = root / BACKENDS_DIR / CUDA_MODULE
    target.parent.mkdir(parents=True)
    shutil.copyfile(module, target)
    target.chmod(0o755)
    strip_binaries(target.parent)
    patchelf.remove_runpath(target)
    licenses = root / LICENSES_DIR
    licenses.mkdir()
    shutil.copyfile(LLAMA_CPP_LICENSE, licenses / LLAMA_CPP_LICENSE.name)
    return target, info

"""The Vulkan overlay: one layer holding llama.cpp's Vulkan backend module, for any GPU.

It does not replace the bundle's llama_cpp: the bundle's own ggml loads the module, because
every llama.cpp process of the launch (the server, the probe, `llama-fit-params`, the
benchmark children) inherits `GGML_BACKEND_PATH` naming it and `GGML_VK_VISIBLE_DEVICES`
naming the chosen device (`vulkan_environment`). It installs like a CUDA overlay (signed index
-> signed manifest -> archive -> extract -> probe) and is recorded in its own pointer,
`vulkan.json`, beside the CUDA overlay's: the launch chooses between the variants.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from llamaship.detect.vulkan_choice import VulkanChoice
from llamaship.detect.vulkan_choice import vulkan_environment as device_environment
from llamaship.io.fetch import Fetcher
from llamaship.launch.launch_env import BACKEND_PATH
from llamaship.overlay.install import (
    Installer,
    InstallOptions,
    ProbeRejected,
    ProgressFn,
)
from llamaship.overlay.select import AvailableOverlay, Target
from llamaship.overlay.store import OverlayStore
from llamaship.paths import DataDirs
from llamaship_contract.errors import LlamashipError
from llamaship_contract.launch import ProbeResult
from llamaship_contract.overlay import LayerManifest, vulkan_requirements
from llamaship_contract.state import VulkanPointer
from llamaship_contract.trust import TrustedKeys

_log = logging.getLogger(__name__)

_MODULE_NAMES = {"win32": "ggml-vulkan.dll", "darwin": "libggml-vulkan.dylib"}

VulkanProbeFn = Callable[[Path, Mapping[str, str], float], ProbeResult]
"""Loads the module in a child process with the environment given (see `run_module_probe`)."""


@dataclass(frozen=True)
class VulkanOverlay:
    """An installed Vulkan overlay: its pointer and the backend module's path."""

    pointer: VulkanPointer
    module: Path

    @property
    def overlay_version(self) -> str:
        return self.pointer.overlay_version

    @property
    def llama_cpp_version(self) -> str:
        return self.pointer.llama_cpp_version


def module_path(manifest: LayerManifest) -> str:
    """The backend module's path in the layer (`backends/libggml-vulkan.so` on Linux)."""
    wanted = _MODULE_NAMES.get(sys.platform, "libggml-vulkan.so")
    for entry in manifest.files:
        if entry.path == f"backends/{wanted}" and entry.link is None:
            return entry.path
    msg = f"the llama-vulkan layer of overlay {manifest.overlay_version} holds no {wanted}"
    raise LlamashipError(msg)


def installed_vulkan(store: OverlayStore) -> VulkanOverlay | None:
    """The installed Vulkan overlay, or None when there is none or its layer is gone."""
    pointer = store.vulkan()
    if pointer is None:
        return None
    module = store.layer_dir(pointer.layer) / pointer.module
    if not module.is_file():
        _log.warning(
            "ignoring the Vulkan overlay %s: %s is missing", pointer.overlay_version, module
        )
        return None
    return VulkanOverlay(pointer, module)


def vulkan_environment(overlay: VulkanOverlay, choice: VulkanChoice) -> dict[str, str]:
    """What every llama.cpp process of a launch on `overlay` needs in its environment."""
    return {BACKEND_PATH: str(overlay.module), **device_environment(choice)}


def _default_probe(module: Path, environment: Mapping[str, str], timeout: float) -> ProbeResult:
    from llamaship.launch.probe import run_module_probe  # lazy: it starts a child process

    return run_module_probe(module, environment, timeout)


class VulkanInstaller(Installer):
    """The installer's pipeline for the `llama-vulkan` layer; the result goes to `vulkan.json`.

    `choice` is the device the probe (and later every launch) makes visible to ggml.
    """

    def __init__(
        self,
        dirs: DataDirs,
        trusted_keys: TrustedKeys | Sequence[str],
        *,
        choice: VulkanChoice,
        module_probe: VulkanProbeFn | None = None,
        progress: ProgressFn | None = None,
        options: InstallOptions | None = None,
    ) -> None:
        super().__init__(dirs, trusted_keys, progress=progress, options=options)
        self.choice = choice
        self.module_probe = module_probe or _default_probe

    def install_vulkan(
        self, index_location: str, target: Target, *, skip_quarantined: bool = False
    ) -> VulkanOverlay:
        """Install the Vulkan overlay the release `index_location` offers `target`."""
        with self.store.install_lock(timeout=self.options.lock_timeout_s):
            self.store.cleanup_leftovers()
            with Fetcher(self.options.limits) as fetcher:
                available = self.find(index_location, target, fetcher, "vulkan", skip_quarantined)
                return self._install_vulkan(available, fetcher)

    def _install_vulkan(self, available: AvailableOverlay, fetcher: Fetcher) -> VulkanOverlay:
        (layer,) = available.layers
        pointer = VulkanPointer(
            overlay_version=available.entry.overlay_version,
            serial=available.entry.serial,
            llama_cpp_version=available.entry.llama_cpp_version,
            layer=layer.id,
            module=module_path(layer.manifest),
            requirements=vulkan_requirements(layer.manifest),
        )
        if self.store.vulkan() == pointer and installed_vulkan(self.store) is not None:
            self.report("done", message=f"overlay {pointer.overlay_version} is already installed")
            return VulkanOverlay(pointer, self.store.layer_dir(layer.id) / pointer.module)
        missing = [] if self.store.has_layer(layer.id) else [layer]

        def adopt() -> VulkanOverlay:
            overlay = VulkanOverlay(pointer, self.store.layer_dir(layer.id) / pointer.module)
            self._probe_module(overlay)
            self.report("activate", message=f"installing overlay {pointer.overlay_version}")
            self.store.set_vulkan(pointer)
            return overlay

        overlay = self.bring_in(missing, fetcher, adopt)
        self.store.release_quarantine(pointer.overlay_version)
        self.report("done", message=f"overlay {pointer.overlay_version} is installed")
        return overlay

    def _probe_module(self, overlay: VulkanOverlay) -> None:
        self.report("probe", message=f"probing overlay {overlay.overlay_version} in a subprocess")
        try:
            result = self.module_probe(
                overlay.module,
                vulkan_environment(overlay, self.choice),
                self.options.probe_timeout_s,
            )
        except LlamashipError as error:
            reason = f"its probe failed: {error}"
            self.store.quarantine(overlay.overlay_version, reason)
            msg = (
                f"overlay {overlay.overlay_version} was installed but {reason}; it was "
                "quarantined and removed, the previous setup stays active"
            )
            raise ProbeRejected(msg) from None
        devices = ", ".join(
            f"{device.name} ({device.description})" for device in result.gpu_devices
        )
        _log.info("overlay %s: the probe saw %s", overlay.overlay_version, devices)

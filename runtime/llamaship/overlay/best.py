"""Install the best overlay this machine can run, by the one rule's ranking: a CUDA overlay for
an NVIDIA GPU first, else a Vulkan overlay for the chosen Vulkan device.

`overlay install`, the upgrade API and the launch rank the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from llamaship.overlay.install import Installer, InstallResult
from llamaship.overlay.select import NoMatchingOverlay, Target
from llamaship.overlay.vulkan import VulkanInstaller, VulkanOverlay
from llamaship_contract.overlay import LayerKind


@dataclass(frozen=True)
class BestInstall:
    """What was installed: a CUDA overlay (`cuda`) or a Vulkan one (`vulkan`)."""

    kind: LayerKind
    cuda: InstallResult | None = None
    vulkan: VulkanOverlay | None = None

    @property
    def overlay_version(self) -> str:
        if self.cuda is not None:
            return self.cuda.overlay.overlay_version
        assert self.vulkan is not None
        return self.vulkan.overlay_version

    @property
    def changed(self) -> bool:
        """Something new was installed (a Vulkan install always writes its pointer)."""
        return self.cuda.changed if self.cuda is not None else True


def install_best(
    index_location: str,
    target: Target,
    *,
    cuda: Installer | None,
    vulkan: VulkanInstaller | None,
) -> BestInstall:
    """Try the CUDA installer, then the Vulkan one (each given one, in rank order); raise
    `NoMatchingOverlay` naming every kind's problems when neither has an overlay for `target`."""
    problems: list[str] = []
    if cuda is not None:
        try:
            return BestInstall("cuda", cuda=cuda.install(index_location, target))
        except NoMatchingOverlay as error:
            problems.append(f"cuda: {error}")
    if vulkan is not None:
        try:
            return BestInstall("vulkan", vulkan=vulkan.install_vulkan(index_location, target))
        except NoMatchingOverlay as error:
            problems.append(f"vulkan: {error}")
    raise NoMatchingOverlay("; ".join(problems) or "no overlay kind was asked for")

"""Install the best overlay this machine can run, by the one rule's ranking: a CUDA overlay for
an NVIDIA GPU first, else a Vulkan overlay for the chosen Vulkan device.

`overlay install` and the upgrade API use this; the launch ranks the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llamaship.detect.vulkan_choice import VulkanChoice
from llamaship.overlay.install import (
    Installer,
    InstallOptions,
    InstallResult,
    ProbeFn,
    ProgressFn,
)
from llamaship.overlay.select import NoMatchingOverlay, Target
from llamaship.overlay.vulkan import VulkanInstaller, VulkanOverlay
from llamaship.paths import DataDirs
from llamaship_contract.overlay import LayerKind
from llamaship_contract.trust import TrustedKeys


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


def install_best(
    dirs: DataDirs,
    trusted_keys: TrustedKeys | Sequence[str],
    index_location: str,
    target: Target,
    choice: VulkanChoice,
    *,
    kinds: Sequence[LayerKind] = ("cuda", "vulkan"),
    probe: ProbeFn | None = None,
    progress: ProgressFn | None = None,
    options: InstallOptions | None = None,
) -> BestInstall:
    """Try each kind in rank order; raise `NoMatchingOverlay` naming every kind's problems.

    `probe` replaces the CUDA overlay's probe child (the Vulkan module's is the installer's).
    """
    problems: list[str] = []
    for kind in kinds:
        try:
            if kind == "cuda":
                installer = Installer(
                    dirs, trusted_keys, probe=probe, progress=progress, options=options
                )
                return BestInstall("cuda", cuda=installer.install(index_location, target))
            vulkan = VulkanInstaller(
                dirs, trusted_keys, choice=choice, progress=progress, options=options
            )
            return BestInstall("vulkan", vulkan=vulkan.install_vulkan(index_location, target))
        except NoMatchingOverlay as error:
            problems.append(f"{kind}: {error}")
    raise NoMatchingOverlay("; ".join(problems))

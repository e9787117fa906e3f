"""What an upgrade would fetch, without installing it: the settings page's "Upgrade to GPU" offer.

`find_offer` reads and verifies the signed release index and the chosen release's manifests,
exactly as an install does (`find_overlay`), and adds up the archive sizes of the layers this
machine does not have yet. Nothing is downloaded beyond the index and the manifests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llamaship.io.fetch import Fetcher
from llamaship.io.http_session import DownloadLimits
from llamaship.overlay.select import AvailableOverlay, NoMatchingOverlay, Target, find_overlay
from llamaship.overlay.store import OverlayStore
from llamaship.paths import DataDirs
from llamaship_contract.overlay import KIND_LAYERS, LayerKind
from llamaship_contract.trust import TrustedKeys

# The offer only reads small signed files: it never waits long for a running install.
OFFER_LOCK_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class UpgradeOffer:
    """The overlay the release index offers this machine and what installing it costs."""

    overlay_version: str
    kind: LayerKind
    cuda_version: str | None
    """The CUDA version of a CUDA overlay (None for a Vulkan overlay)."""
    download_bytes: int
    """Archive bytes of the layers not yet installed (0 when all are)."""
    unpacked_bytes: int
    """Disk space those layers take once unpacked."""
    reused_layers: tuple[str, ...]
    active: bool
    """This overlay is already the active one."""


def find_offer(
    dirs: DataDirs,
    trusted_keys: TrustedKeys | Sequence[str],
    index_location: str,
    target: Target,
    limits: DownloadLimits | None = None,
) -> UpgradeOffer:
    """The offer for `target` from the index at `index_location`, by the one rule's ranking
    (a CUDA overlay first, then a Vulkan one); raises the installer's errors: no matching
    overlay (naming each kind's problems), bad signature, an install already running..."""
    store = OverlayStore(dirs)
    problems: list[str] = []
    with (
        store.install_lock(timeout=OFFER_LOCK_TIMEOUT_S),
        Fetcher(limits or DownloadLimits()) as fetcher,
    ):
        for kind in KIND_LAYERS:
            try:
                available = find_overlay(
                    index_location, store, target, trusted_keys, fetcher, kind=kind
                )
            except NoMatchingOverlay as error:
                problems.append(f"{kind}: {error}")
                continue
            return _offer(store, available)
    raise NoMatchingOverlay("; ".join(problems))


def _offer(store: OverlayStore, available: AvailableOverlay) -> UpgradeOffer:
    missing = [layer for layer in available.layers if not store.has_layer(layer.id)]
    if available.entry.kind == "vulkan":
        vulkan = store.vulkan()
        return UpgradeOffer(
            overlay_version=available.entry.overlay_version,
            kind="vulkan",
            cuda_version=None,
            download_bytes=sum(layer.manifest.archive.size for layer in missing),
            unpacked_bytes=sum(layer.manifest.unpacked_size for layer in missing),
            reused_layers=tuple(layer.id for layer in available.layers if layer not in missing),
            active=vulkan is not None and vulkan.overlay_version == available.entry.overlay_version,
        )
    active = store.active()
    record = available.record()
    return UpgradeOffer(
        overlay_version=available.entry.overlay_version,
        kind="cuda",
        cuda_version=record.requirements.cuda_version,
        download_bytes=sum(layer.manifest.archive.size for layer in missing),
        unpacked_bytes=sum(layer.manifest.unpacked_size for layer in missing),
        reused_layers=tuple(layer.id for layer in available.layers if layer not in missing),
        active=active is not None and active.record == record,
    )

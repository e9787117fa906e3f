"""Choose the CUDA overlay release: signed index -> this machine's release -> signed manifests.

1. fetch `releases.json` + `.sig`, verify the signature, refuse a serial older than the newest
   accepted one (`DataDirs.state/accepted_serial.json`);
2. pick the release for this platform, python tag and the bundle's llama_cpp version that
   this machine can run (`llamaship.compat`), the newest CUDA version first;
3. fetch and verify both layer manifests (signature, the sha256 the index pins, and that they
   describe this release), refuse a manifest serial older than the newest accepted.
Nothing is downloaded beyond these small signed files; `llamaship.overlay.install` installs
what `find_overlay` returns.
"""

from __future__ import annotations

import hashlib
import logging
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from llamaship.compat import (
    Unusable,
    Usable,
    Verdict,
    code_fit,
    floor_problems,
    judge,
    judge_vulkan,
    older,
    version_key,
)
from llamaship.detect.libc import SystemLibraries
from llamaship.io.fetch import Fetcher
from llamaship.io.local_files import resolve_location
from llamaship.io.transfer import DownloadError
from llamaship.overlay.freshness import ensure_unexpired
from llamaship.overlay.installed import OverlayRecord
from llamaship.overlay.store import OverlayStore
from llamaship_contract.detection import DetectionReport
from llamaship_contract.errors import LlamashipError
from llamaship_contract.names import SIGNATURE_SUFFIX, ExitStatus
from llamaship_contract.overlay import (
    KIND_LAYERS,
    REQUIRED_LAYER,
    LayerKind,
    LayerManifest,
    OverlayRequirements,
    parse_manifest,
    requirements_for,
    vulkan_requirements,
)
from llamaship_contract.overlay_fields import ManifestError
from llamaship_contract.release_index import (
    LayerRef,
    ReleaseEntry,
    ReleaseList,
    known_entries,
    parse_index,
    parse_release_list,
)
from llamaship_contract.signing import SignatureError, verify
from llamaship_contract.trust import TrustedKeys, trusted

_log = logging.getLogger(__name__)

MAX_INDEX_BYTES = 1 * 2**20
MAX_MANIFEST_BYTES = 8 * 2**20
MAX_SIGNATURE_BYTES = 4096

# (sys.platform, platform.machine()) -> (wheel platform tag, OS name used by `min_driver`)
_PLATFORMS: Mapping[tuple[str, str], tuple[str, str]] = {
    ("linux", "x86_64"): ("linux_x86_64", "linux"),
    ("win32", "AMD64"): ("win_amd64", "windows"),
}


class InstallError(LlamashipError):
    """The overlay cannot be installed; the previously active variant stays in use."""

    exit_code = ExitStatus.OVERLAY_REJECTED


class NoMatchingOverlay(InstallError):
    """The release index offers no overlay this machine and bundle can use."""


class IncompatibleOverlay(InstallError):
    """A manifest describes something other than the release the index promised."""


class ReplayedRelease(InstallError):
    """An index or manifest is older than one this machine already accepted."""


@dataclass(frozen=True)
class Target:
    """What the overlay must fit: this machine, this interpreter, this bundle, this driver."""

    platform: str
    os_name: str
    python_tags: tuple[str, ...]
    llama_cpp_version: str
    machine: DetectionReport
    libraries: SystemLibraries = field(default_factory=SystemLibraries)
    vulkan_device: int | None = None
    """The Vulkan device llama.cpp would use (`llamaship.detect.vulkan_choice`), or None."""

    @classmethod
    def current(
        cls, report: DetectionReport, llama_cpp_version: str, vulkan_device: int | None = None
    ) -> Target:
        """The target of the running process; raises NoMatchingOverlay on an unknown OS/CPU."""
        key = ("linux" if sys.platform.startswith("linux") else sys.platform, platform.machine())
        if key not in _PLATFORMS:
            msg = (
                f"there is no CUDA overlay for {sys.platform} on {platform.machine()}: "
                "overlays exist for Linux x86_64 and Windows x64 only"
            )
            raise NoMatchingOverlay(msg)
        wheel_platform, os_name = _PLATFORMS[key]
        major, minor = sys.version_info[:2]
        return cls(
            platform=wheel_platform,
            os_name=os_name,
            python_tags=("py3", f"cp{major}{minor}"),
            llama_cpp_version=llama_cpp_version,
            machine=report,
            libraries=SystemLibraries.current(),
            vulkan_device=vulkan_device,
        )


@dataclass(frozen=True)
class VerifiedLayer:
    """A layer whose manifest is signed, pinned by the index and matches the release."""

    ref: LayerRef
    manifest: LayerManifest
    archive_location: str

    @property
    def id(self) -> str:
        return self.ref.id


@dataclass(frozen=True)
class AvailableOverlay:
    """The release the index offers this machine, with verified manifests (runtime first)."""

    index_location: str
    index_serial: int
    entry: ReleaseEntry
    layers: tuple[VerifiedLayer, ...]
    requirements: OverlayRequirements | None
    """A CUDA overlay's needs (None for a Vulkan overlay: `vulkan_requirements(entry)`)."""

    def record(self) -> OverlayRecord:
        """The CUDA overlay's pointer record."""
        if self.requirements is None:
            msg = f"overlay {self.entry.overlay_version} is not a CUDA overlay"
            raise InstallError(msg)
        return OverlayRecord(
            overlay_version=self.entry.overlay_version,
            serial=self.entry.serial,
            llama_cpp_version=self.entry.llama_cpp_version,
            layers={layer.manifest.layer: layer.id for layer in self.layers},
            requirements=self.requirements,
        )


def _describe_entry(entry: ReleaseEntry) -> str:
    return (
        f"{entry.overlay_version} ({entry.platform}, {entry.python_tag}, llama_cpp "
        f"{entry.llama_cpp_version}, CUDA {entry.cuda_version})"
    )


def _verdict(entry: ReleaseEntry, target: Target) -> Verdict:
    floors = floor_problems(target.libraries, entry.glibc_floor, entry.glibcxx_floor)
    if floors:
        return Unusable(floors)
    try:
        if entry.kind == "vulkan":
            return judge_vulkan(target.machine, vulkan_requirements(entry), target.vulkan_device)
        requirements = requirements_for(entry, target.os_name)
    except ManifestError as error:
        return Unusable((str(error),))
    return judge(target.machine, requirements)


def pick_release(
    entries: Sequence[ReleaseEntry], target: Target, origin: str, kind: LayerKind = "cuda"
) -> ReleaseEntry:
    """The `kind` release this machine can run (`llamaship.compat`): newest CUDA, then highest
    serial, then (among a release's overlays, one per architecture) the one that runs on the
    most GPUs here, then the one whose code is closest to the GPU.

    Only releases for the target's platform, python and llama_cpp version are considered;
    when none of them can run, the error lists each one's problems.
    """
    offers = [entry for entry in entries if entry.kind == kind]
    fitting = [
        entry
        for entry in offers
        if entry.platform == target.platform
        and entry.python_tag in target.python_tags
        and entry.llama_cpp_version == target.llama_cpp_version
    ]
    if not fitting:
        offered = "; ".join(_describe_entry(entry) for entry in offers) or "nothing"
        other_build = any(
            entry.platform == target.platform and entry.python_tag in target.python_tags
            for entry in offers
        )
        why = (
            "an overlay's backend module loads only into the llama_cpp it was built with: "
            if other_build
            else ""
        )
        msg = (
            f"the release index {origin} offers no overlay for {target.platform}, python "
            f"{'/'.join(target.python_tags)} and llama_cpp {target.llama_cpp_version} (it "
            f"offers: {offered}); {why}update the application"
        )
        raise NoMatchingOverlay(msg)
    verdicts = [(entry, _verdict(entry, target)) for entry in fitting]
    usable = [(entry, verdict) for entry, verdict in verdicts if isinstance(verdict, Usable)]
    if not usable:
        problems = "; ".join(
            f"{entry.overlay_version}: {', '.join(verdict.problems)}"
            for entry, verdict in verdicts
            if isinstance(verdict, Unusable)
        )
        msg = f"no overlay in the release index {origin} can run on this machine: {problems}"
        raise NoMatchingOverlay(msg)
    chosen, _ = max(
        usable,
        key=lambda pair: (
            version_key(pair[0].cuda_version or pair[0].vulkan_api),
            pair[0].serial,
            len(pair[1].gpus),
            _fit(pair[0], pair[1], target),
        ),
    )
    return chosen


def _fit(entry: ReleaseEntry, verdict: Usable, target: Target) -> tuple[int, int]:
    """How closely a usable CUDA release's code fits the GPU it would run on (`code_fit`):
    among the overlays of one release (one per architecture), the one built for this GPU."""
    if entry.kind != "cuda" or not verdict.gpus:
        return (0, 0)
    return code_fit(verdict.best, requirements_for(entry, target.os_name))


def _manifest_problems(manifest: LayerManifest, ref: LayerRef, entry: ReleaseEntry) -> list[str]:
    expected = {
        "layer": ref.layer,
        "overlay_version": entry.overlay_version,
        "serial": entry.serial,
        "platform": entry.platform,
        "python_tag": entry.python_tag,
        "cuda_version": entry.cuda_version,
        "llama_cpp_version": entry.llama_cpp_version,
        "min_driver": entry.min_driver,
        "cuda_archs": entry.cuda_archs,
        "ptx_archs": entry.ptx_archs,
        "min_vram_mb": entry.min_vram_mb,
    }
    problems = [
        f"{name} is {getattr(manifest, name)!r}, the release says {wanted!r}"
        for name, wanted in expected.items()
        if getattr(manifest, name) != wanted
    ]
    for name in ("glibc_floor", "glibcxx_floor"):  # the entry states the release's highest
        floor, stated = getattr(manifest, name), getattr(entry, name)
        if floor is not None and (stated is None or older(stated, floor)):
            problems.append(f"{name} is {floor!r}, above the release's {stated!r}")
    if manifest.id != ref.id:
        problems.append(f"its layer id is {manifest.id}, the index says {ref.id}")
    return problems


def _signed(
    fetcher: Fetcher, location: str, max_size: int, what: str, trusted_keys: Sequence[str]
) -> bytes:
    """The bytes at `location`, verified against `<location>.sig`."""
    data = fetcher.read(location, max_size=max_size, what=what)
    try:
        signature = fetcher.read(
            f"{location}{SIGNATURE_SUFFIX}",
            max_size=MAX_SIGNATURE_BYTES,
            what=f"signature of the {what}",
        )
    except DownloadError as error:
        msg = (
            f"the {what} at {location} is refused: its signature cannot be fetched "
            f"({error}); only signed releases are installed"
        )
        raise SignatureError(msg) from None
    try:
        signer = verify(data, signature, trusted_keys)
    except SignatureError as error:
        msg = f"the {what} at {location} is refused: {error}"
        raise SignatureError(msg) from None
    _log.info("%s %s: signed by key %s", what, location, signer)
    return data


def _requirement_problems(layers: Sequence[VerifiedLayer]) -> list[str]:
    """Each layer that requires another must name exactly the release's layer of that kind."""
    by_name: dict[str, VerifiedLayer] = {layer.manifest.layer: layer for layer in layers}
    problems = []
    for layer in layers:
        wanted = REQUIRED_LAYER[layer.manifest.layer]
        if wanted is None:
            continue
        required, present = layer.manifest.requires, by_name[wanted]
        if required is None or (required.id, required.sha256) != (
            present.id,
            present.manifest.archive.sha256,
        ):
            problems.append(
                f"{layer.manifest.layer}: it requires {required}, not the release's "
                f"{wanted} layer {present.id}"
            )
    return problems


def _release_list(
    fetcher: Fetcher, index_location: str, keys: TrustedKeys, accepted_index: int
) -> tuple[int, ReleaseList]:
    """The verified `releases.json` serial and the release list it pins (release key only)."""
    index_bytes = _signed(fetcher, index_location, MAX_INDEX_BYTES, "release index", keys.for_index)
    index = parse_index(index_bytes, origin=f"release index {index_location}")
    ensure_unexpired(index, index_location)  # before any serial of it is recorded
    if index.serial < accepted_index:
        msg = (
            f"the release index at {index_location} has serial {index.serial}, older than "
            f"serial {accepted_index} already accepted here: an outdated or replayed index "
            "was served; refusing it (check the release URL or try again later)"
        )
        raise ReplayedRelease(msg)
    pinned = index.overlays
    location = resolve_location(index_location, pinned.name)
    data = _signed(fetcher, location, pinned.size, "release list", keys.release)
    if len(data) != pinned.size or hashlib.sha256(data).hexdigest() != pinned.sha256:
        msg = (
            f"the release list at {location} is not the one the signed index pins (size or "
            "sha256 differs): refused; the release is being published, try again later"
        )
        raise IncompatibleOverlay(msg)
    releases = parse_release_list(data, origin=f"release list {location}")
    if releases.serial != pinned.serial:
        msg = (
            f"the release list at {location} has serial {releases.serial}, the index pins "
            f"{pinned.serial}: refused; the release is inconsistent, try again later"
        )
        raise IncompatibleOverlay(msg)
    return index.serial, releases


def find_overlay(
    index_location: str,
    store: OverlayStore,
    target: Target,
    trusted_keys: TrustedKeys | Sequence[str],
    fetcher: Fetcher,
    kind: LayerKind = "cuda",
) -> AvailableOverlay:
    """Fetch and verify the index, its release list and the chosen release's manifests.

    Records the index serial once its signature is verified, and the release serial once its
    manifests are, so a later replay of anything older is refused. Entries this reader does
    not understand are skipped with a log line; the others are judged as usual.
    """
    keys = trusted(trusted_keys)
    accepted = store.accepted_serials()
    index_serial, releases = _release_list(fetcher, index_location, keys, accepted.index)
    store.accept_serials(index=index_serial, manifest=0)
    entries, skipped = known_entries(releases, f"release list of {index_location}")
    for line in skipped:
        _log.info("%s", line)
    entry = pick_release(entries, target, index_location, kind)
    layers: list[VerifiedLayer] = []
    problems: list[str] = []
    for name in KIND_LAYERS[entry.kind]:  # a required layer first
        ref = entry.layer(name)
        location = resolve_location(index_location, ref.manifest)
        what = f"{name} manifest of overlay {entry.overlay_version}"
        data = _signed(fetcher, location, MAX_MANIFEST_BYTES, what, keys.release)
        if hashlib.sha256(data).hexdigest() != ref.manifest_sha256:
            msg = (
                f"the {what} at {location} is not the one the signed index pins "
                "(sha256 differs): refused; the release is inconsistent, try again later"
            )
            raise IncompatibleOverlay(msg)
        manifest = parse_manifest(data, origin=f"{what} ({location})")
        problems += [f"{name}: {problem}" for problem in _manifest_problems(manifest, ref, entry)]
        layers.append(
            VerifiedLayer(
                ref=ref,
                manifest=manifest,
                archive_location=resolve_location(index_location, ref.archive),
            )
        )
    problems += _requirement_problems(layers)
    if problems:
        msg = (
            f"the manifests of overlay {entry.overlay_version} do not match the release "
            f"that index {index_location} describes: {'; '.join(problems)}; refusing it"
        )
        raise IncompatibleOverlay(msg)
    if entry.serial < accepted.manifest:
        msg = (
            f"overlay {entry.overlay_version} has serial {entry.serial}, older than serial "
            f"{accepted.manifest} already accepted here: refusing a downgrade or replay"
        )
        raise ReplayedRelease(msg)
    store.accept_serials(index=index_serial, manifest=entry.serial)
    return AvailableOverlay(
        index_location=index_location,
        index_serial=index_serial,
        entry=entry,
        layers=tuple(layers),
        requirements=(
            requirements_for(layers[-1].manifest, target.os_name) if entry.kind == "cuda" else None
        ),
    )

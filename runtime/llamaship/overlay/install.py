"""Install the CUDA overlay: signed index -> signed manifests -> archives -> extract -> probe ->
activate, all or nothing.

Pipeline (one installer at a time: the store's install lock; a second one waits
`InstallOptions.lock_timeout_s`, then fails with `InstallBusy`):
1. fetch `releases.json` + `.sig`, verify the signature, refuse a serial older than the newest
   accepted one (`DataDirs.state/accepted_serial.json`);
2. pick the release for this platform, python tag and the bundle's llama_cpp version that
   this machine can run (`llamaship.compat`), the newest CUDA version first;
3. fetch and verify both layer manifests (signature, the sha256 the index pins, and that they
   describe this release), refuse a manifest serial older than the newest accepted;
4. download the archives of layers not installed yet (the `cuda-runtime` layer is shared by
   releases of one CUDA version, so an update of llama.cpp fetches only `llama-cuda`);
5. extract each into `.staging-*`, verify, rename to `layers/<id>`;
6. probe the new overlay (a subprocess: the native libraries may crash); a failure quarantines
   the version;
7. switch `active.json` atomically, keeping the old one as `previous.json`.
Anything that fails leaves the previous overlay (or none: CPU) active and removes what it
created. The steps a caller may observe are listed in `llamaship.overlay.checkpoints`.
"""

from __future__ import annotations

import hashlib
import logging
import platform
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from llamaship.compat import Unusable, Usable, Verdict, judge, version_key
from llamaship.errors import LlamashipError
from llamaship.io.fetch import Fetcher
from llamaship.io.fs import ensure_free_space
from llamaship.io.http_session import DownloadLimits
from llamaship.io.local_files import resolve_location
from llamaship.io.transfer import DownloadError, FetchedFile
from llamaship.overlay.checkpoints import checkpoint
from llamaship.overlay.extract import MAX_UNPACKED_BYTES, extract_layer
from llamaship.overlay.freshness import ensure_unexpired
from llamaship.overlay.manifest import (
    LAYER_NAMES,
    LayerManifest,
    LayerRef,
    ManifestError,
    ReleaseEntry,
    ReleaseIndex,
    layer_id,
    parse_index,
    parse_manifest,
    requirements_for,
)
from llamaship.overlay.store import (
    INSTALL_LOCK_TIMEOUT_S,
    LLAMA_LAYER,
    RUNTIME_LAYER,
    InstalledOverlay,
    OverlayRecord,
    OverlayStore,
)
from llamaship.paths import DataDirs
from llamaship_contract.detection import DetectionReport
from llamaship_contract.names import INDEX_NAME, SIGNATURE_SUFFIX, ExitStatus
from llamaship_contract.signing import SignatureError, verify

if TYPE_CHECKING:
    from llamaship.config import Settings
    from llamaship.launch.decide import OverlayRequirements
    from llamaship.launch.probe import ProbeResult

_log = logging.getLogger(__name__)

MAX_INDEX_BYTES = 1 * 2**20
MAX_MANIFEST_BYTES = 8 * 2**20
MAX_SIGNATURE_BYTES = 4096

Phase = Literal["index", "download", "verify", "extract", "probe", "activate", "done"]
ProbeFn = Callable[[Path, Path, float], "ProbeResult | None"]
"""`(llama_dir, runtime_lib_dir, timeout_s)`; raises a LlamashipError when the overlay fails."""

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


class QuarantinedRelease(InstallError):
    """The release on offer is quarantined and the caller asked to skip quarantined ones."""


class ProbeRejected(InstallError):
    """The freshly installed overlay failed its probe; it was quarantined and removed."""


@dataclass(frozen=True)
class InstallProgress:
    """What the installer is doing; `bytes_*` count archive bytes over all layers fetched."""

    phase: Phase
    bytes_done: int
    bytes_total: int
    message: str


ProgressFn = Callable[[InstallProgress], None]


@dataclass(frozen=True)
class Target:
    """What the overlay must fit: this machine, this interpreter, this bundle, this driver."""

    platform: str
    os_name: str
    python_tags: tuple[str, ...]
    llama_cpp_version: str
    machine: DetectionReport

    @classmethod
    def current(cls, report: DetectionReport, llama_cpp_version: str) -> Target:
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
    requirements: OverlayRequirements

    def record(self) -> OverlayRecord:
        return OverlayRecord(
            overlay_version=self.entry.overlay_version,
            serial=self.entry.serial,
            llama_cpp_version=self.entry.llama_cpp_version,
            layers={layer.manifest.layer: layer.id for layer in self.layers},
            requirements=self.requirements,
        )


@dataclass(frozen=True)
class InstallOptions:
    """Tunables of one install; the defaults suit real releases."""

    limits: DownloadLimits = field(default_factory=DownloadLimits)
    probe_timeout_s: float = 120.0
    lock_timeout_s: float = INSTALL_LOCK_TIMEOUT_S
    max_unpacked_bytes: int = MAX_UNPACKED_BYTES


@dataclass(frozen=True)
class InstallResult:
    """What `install_overlay` left active and which layers it fetched or reused."""

    overlay: InstalledOverlay
    changed: bool
    fetched_layers: tuple[str, ...]
    reused_layers: tuple[str, ...]


def _describe_entry(entry: ReleaseEntry) -> str:
    return (
        f"{entry.overlay_version} ({entry.platform}, {entry.python_tag}, llama_cpp "
        f"{entry.llama_cpp_version}, CUDA {entry.cuda_version})"
    )


def _verdict(entry: ReleaseEntry, target: Target) -> Verdict:
    try:
        requirements = requirements_for(entry, target.os_name)
    except ManifestError as error:
        return Unusable((str(error),))
    return judge(target.machine, requirements)


def pick_release(index: ReleaseIndex, target: Target, origin: str) -> ReleaseEntry:
    """The release this machine can run (`llamaship.compat`): newest CUDA, then highest serial.

    Only releases for the target's platform, python and llama_cpp version are considered;
    when none of them can run, the error lists each one's problems.
    """
    fitting = [
        entry
        for entry in index.overlays
        if entry.platform == target.platform
        and entry.python_tag in target.python_tags
        and entry.llama_cpp_version == target.llama_cpp_version
    ]
    if not fitting:
        offered = "; ".join(_describe_entry(entry) for entry in index.overlays) or "nothing"
        msg = (
            f"the release index {origin} offers no overlay for {target.platform}, python "
            f"{'/'.join(target.python_tags)} and llama_cpp {target.llama_cpp_version} (it "
            f"offers: {offered}); update the application"
        )
        raise NoMatchingOverlay(msg)
    verdicts = [(entry, _verdict(entry, target)) for entry in fitting]
    usable = [entry for entry, verdict in verdicts if isinstance(verdict, Usable)]
    if not usable:
        problems = "; ".join(
            f"{entry.overlay_version}: {', '.join(verdict.problems)}"
            for entry, verdict in verdicts
            if isinstance(verdict, Unusable)
        )
        msg = f"no overlay in the release index {origin} can run on this machine: {problems}"
        raise NoMatchingOverlay(msg)
    return max(usable, key=lambda entry: (version_key(entry.cuda_version), entry.serial))


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
    if layer_id(manifest) != ref.id:
        problems.append(f"its layer id is {layer_id(manifest)}, the index says {ref.id}")
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


def find_overlay(
    index_location: str,
    store: OverlayStore,
    target: Target,
    trusted_keys: Sequence[str],
    fetcher: Fetcher,
) -> AvailableOverlay:
    """Fetch and verify the index and the chosen release's manifests.

    Records the index serial once its signature is verified, and the release serial once its
    manifests are, so a later replay of anything older is refused.
    """
    accepted = store.accepted_serials()
    index_bytes = _signed(fetcher, index_location, MAX_INDEX_BYTES, "release index", trusted_keys)
    index = parse_index(index_bytes, origin=f"release index {index_location}")
    ensure_unexpired(index, index_location)  # before any serial of it is recorded
    if index.serial < accepted.index:
        msg = (
            f"the release index at {index_location} has serial {index.serial}, older than "
            f"serial {accepted.index} already accepted here: an outdated or replayed index "
            "was served; refusing it (check the release URL or try again later)"
        )
        raise ReplayedRelease(msg)
    store.accept_serials(index=index.serial, manifest=0)
    entry = pick_release(index, target, index_location)
    layers: list[VerifiedLayer] = []
    problems: list[str] = []
    for name in LAYER_NAMES:  # runtime first: the llama layer requires it
        ref = entry.layer(name)
        location = resolve_location(index_location, ref.manifest)
        what = f"{name} manifest of overlay {entry.overlay_version}"
        data = _signed(fetcher, location, MAX_MANIFEST_BYTES, what, trusted_keys)
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
    runtime, llama = layers
    required = llama.manifest.requires
    if required is None or (required.id, required.sha256) != (
        runtime.id,
        runtime.manifest.archive.sha256,
    ):
        problems.append(
            f"{LLAMA_LAYER}: it requires {required}, not the release's "
            f"{RUNTIME_LAYER} layer {runtime.id}"
        )
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
    store.accept_serials(index=index.serial, manifest=entry.serial)
    return AvailableOverlay(
        index_location=index_location,
        index_serial=index.serial,
        entry=entry,
        layers=tuple(layers),
        requirements=requirements_for(llama.manifest, target.os_name),
    )


def _default_probe(llama_dir: Path, runtime_lib_dir: Path, timeout: float) -> ProbeResult:
    from llamaship.launch.probe import run_probe  # lazy: the probe spawns the overlay's interpreter

    return run_probe(llama_dir, runtime_lib_dir, timeout)


class Installer:
    """Runs the install pipeline for one data directory."""

    def __init__(
        self,
        dirs: DataDirs,
        trusted_keys: Sequence[str],
        *,
        probe: ProbeFn | None = None,
        progress: ProgressFn | None = None,
        options: InstallOptions | None = None,
    ) -> None:
        self.dirs = dirs
        self.store = OverlayStore(dirs)
        self.trusted_keys = tuple(trusted_keys)
        self.probe = probe or _default_probe
        self.options = options or InstallOptions()
        self._progress = progress
        self._last = InstallProgress("index", 0, 0, "")

    def report(
        self,
        phase: Phase | None = None,
        *,
        done: int | None = None,
        total: int | None = None,
        message: str | None = None,
    ) -> None:
        self._last = replace(
            self._last,
            phase=phase or self._last.phase,
            bytes_done=self._last.bytes_done if done is None else done,
            bytes_total=self._last.bytes_total if total is None else total,
            message=self._last.message if message is None else message,
        )
        if self._progress is not None:
            self._progress(self._last)

    def install(
        self, index_location: str, target: Target, *, skip_quarantined: bool = False
    ) -> InstallResult:
        """Install and activate the release `index_location` offers `target`.

        `skip_quarantined` refuses a quarantined version (the automatic launch path); an
        explicit install retries it and lifts the quarantine when it passes the probe.
        """
        with self.store.install_lock(timeout=self.options.lock_timeout_s):
            self.store.cleanup_leftovers()
            self.report("index", message=f"reading the release index {index_location}")
            with Fetcher(self.options.limits) as fetcher:
                available = find_overlay(
                    index_location, self.store, target, self.trusted_keys, fetcher
                )
                checkpoint("index")
                version = available.entry.overlay_version
                reason = self.store.quarantine_reason(version)
                if skip_quarantined and reason is not None:
                    msg = (
                        f"overlay {version} is quarantined ({reason}); install it explicitly "
                        "with `llamaship overlay install` to retry"
                    )
                    raise QuarantinedRelease(msg)
                return self._install(available, fetcher)

    def _install(self, available: AvailableOverlay, fetcher: Fetcher) -> InstallResult:
        record = available.record()
        active = self.store.active()
        if active is not None and active.record == record:
            self.report("done", message=f"overlay {record.overlay_version} is already active")
            return InstallResult(
                active,
                changed=False,
                fetched_layers=(),
                reused_layers=tuple(record.layers.values()),
            )
        missing = [layer for layer in available.layers if not self.store.has_layer(layer.id)]
        reused = tuple(layer.id for layer in available.layers if layer not in missing)
        fetched: dict[str, FetchedFile] = {}
        activated = False
        try:
            self._check_space(missing)
            self._fetch(missing, fetcher, fetched)
            for layer in missing:
                self._unpack(layer, fetched.pop(layer.id))
            checkpoint("renamed")
            self._probe(record)
            checkpoint("probed")
            self.report("activate", message=f"activating overlay {record.overlay_version}")
            installed = self.store.activate(record)
            activated = True
        finally:
            for leftover in fetched.values():
                if leftover.owned:
                    leftover.path.unlink(missing_ok=True)
            if not activated:
                self.store.collect_garbage()
        self.store.release_quarantine(record.overlay_version)
        self.report("done", message=f"overlay {record.overlay_version} is active")
        return InstallResult(
            installed,
            changed=True,
            fetched_layers=tuple(layer.id for layer in missing),
            reused_layers=reused,
        )

    def _check_space(self, missing: Sequence[VerifiedLayer]) -> None:
        archives = sum(layer.manifest.archive.size for layer in missing)
        unpacked = sum(layer.manifest.unpacked_size for layer in missing)
        for directory in (self.dirs.downloads, self.store.root):
            directory.mkdir(parents=True, exist_ok=True)
        if self.dirs.downloads.stat().st_dev == self.store.root.stat().st_dev:
            ensure_free_space(
                self.store.root, archives + unpacked, "the overlay download and unpacking"
            )
        else:
            ensure_free_space(self.dirs.downloads, archives, "the overlay download")
            ensure_free_space(self.store.root, unpacked, "unpacking the overlay")

    def _fetch(
        self, missing: Sequence[VerifiedLayer], fetcher: Fetcher, fetched: dict[str, FetchedFile]
    ) -> None:
        total = sum(layer.manifest.archive.size for layer in missing)
        finished = 0
        for layer in missing:
            archive = layer.manifest.archive
            self.report(
                "download",
                done=finished,
                total=total,
                message=f"fetching {archive.name} ({archive.size} bytes)",
            )

            def progress(done: int, _total: int, base: int = finished) -> None:
                self.report(done=base + done)

            fetched[layer.id] = fetcher.fetch(
                layer.archive_location,
                self.dirs.downloads,
                archive.name,
                size=archive.size,
                sha256=archive.sha256,
                progress=progress,
            )
            finished += archive.size
            self.report("verify", done=finished, message=f"{archive.name}: size and sha256 match")

    def _unpack(self, layer: VerifiedLayer, archive: FetchedFile) -> None:
        self.report("extract", message=f"unpacking {layer.manifest.archive.name}")
        staging = self.store.new_staging_dir()
        try:
            extract_layer(
                archive.path,
                staging,
                layer.manifest,
                max_unpacked_bytes=self.options.max_unpacked_bytes,
            )
            self.store.commit_layer(staging, layer.id)
        except BaseException:
            self.store.discard(staging)
            raise
        finally:
            if archive.owned:
                archive.path.unlink(missing_ok=True)

    def _probe(self, record: OverlayRecord) -> None:
        installed = self.store.installed(record)
        self.report("probe", message=f"probing overlay {record.overlay_version} in a subprocess")
        try:
            result = self.probe(
                installed.llama_dir, installed.runtime_lib_dir, self.options.probe_timeout_s
            )
        except LlamashipError as error:
            reason = f"its probe failed: {error}"
            self.store.quarantine(record.overlay_version, reason)
            msg = (
                f"overlay {record.overlay_version} was installed but {reason}; it was "
                "quarantined and removed, the previous setup stays active"
            )
            raise ProbeRejected(msg) from None
        from llamaship.launch.probe_record import (
            record_passed,  # the launch after it need not probe
        )

        record_passed(installed, self.dirs, "install", result)


@dataclass(frozen=True)
class InstallOutcome:
    """What `ensure_overlay` did at launch; it never raises for an expected failure."""

    status: Literal["installed", "current", "skipped", "failed"]
    message: str
    active: InstalledOverlay | None


def index_location_of(path: Path) -> str:
    """The index of a local release: `path` itself, or `path/releases.json` for a directory."""
    index = path / INDEX_NAME if path.is_dir() else path
    if not index.is_file():
        msg = f"no release index at {index}: pass a release directory or its {INDEX_NAME}"
        raise InstallError(msg)
    return str(index.resolve())


def install_from_path(
    path: Path,
    dirs: DataDirs,
    target: Target,
    trusted_keys: Sequence[str],
    **installer_options: Any,
) -> InstallResult:
    """Install from a local release directory or `releases.json` (`llamaship overlay install`)."""
    return Installer(dirs, trusted_keys, **installer_options).install(
        index_location_of(path), target
    )


def ensure_overlay(
    settings: Settings,
    dirs: DataDirs,
    report: DetectionReport,
    bundle_llama_cpp_version: str,
    progress: ProgressFn | None = None,
    *,
    probe: ProbeFn | None = None,
    trusted_keys: Sequence[str] | None = None,
) -> InstallOutcome:
    """At launch: install the newest overlay for this machine from `settings.release_url`.

    Never raises for an expected failure: skips without a release URL, skips a quarantined
    release, does not wait while another process installs, and on any failure returns
    `status="failed"` with the reason, leaving the active overlay (or CPU) in place.
    `trusted_keys`: the release keys (default: the bundled ones).
    """
    from llamaship.io import trusted_keys as signing

    store = OverlayStore(dirs)
    if settings.release_url is None:
        return InstallOutcome(
            "skipped", "no release URL is configured (LLAMASHIP_RELEASE_URL)", store.active()
        )
    try:
        target = Target.current(report, bundle_llama_cpp_version)
        installer = Installer(
            dirs,
            signing.trusted_keys(trusted_keys),
            probe=probe,
            progress=progress,
            options=InstallOptions(lock_timeout_s=0),
        )
        result = installer.install(settings.release_url, target, skip_quarantined=True)
    except QuarantinedRelease as error:
        return InstallOutcome("skipped", str(error), store.active())
    except (LlamashipError, OSError) as error:
        _log.warning("overlay not installed: %s", error)
        return InstallOutcome("failed", str(error), store.active())
    if not result.changed:
        return InstallOutcome(
            "current", f"overlay {result.overlay.overlay_version} is up to date", result.overlay
        )
    return InstallOutcome(
        "installed", f"installed overlay {result.overlay.overlay_version}", result.overlay
    )

"""Install the CUDA overlay chosen by `llamaship.overlay.select`: archives -> extract -> probe ->
activate, all or nothing.

Pipeline (one installer at a time: the store's install lock; a second one waits
`InstallOptions.lock_timeout_s`, then fails with `InstallBusy`):
1. choose the release and verify its index and manifests (`llamaship.overlay.select.find_overlay`);
2. download the archives of layers not installed yet (the `cuda-runtime` layer is shared by
   releases of one CUDA version, so an update of llama.cpp fetches only `llama-cuda`);
3. extract each into `.staging-*`, verify, rename to `layers/<id>`;
4. probe the new overlay (a subprocess: the native libraries may crash); a failure quarantines
   the version;
5. switch `active.json` atomically, keeping the old one as `previous.json`.
Anything that fails leaves the previous overlay (or none: CPU) active and removes what it
created. The steps a caller may observe (`Installer(observer=...)`) are listed in
`llamaship.overlay.checkpoints`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from llamaship.io.fetch import Fetcher
from llamaship.io.fs import ensure_free_space
from llamaship.io.http_session import DownloadLimits
from llamaship.io.transfer import FetchedFile
from llamaship.overlay.checkpoints import InstallObserver, ignore_step
from llamaship.overlay.extract import MAX_UNPACKED_BYTES, extract_layer
from llamaship.overlay.installed import InstalledOverlay, OverlayRecord
from llamaship.overlay.select import (
    AvailableOverlay,
    InstallError,
    Target,
    VerifiedLayer,
    find_overlay,
)
from llamaship.overlay.store import INSTALL_LOCK_TIMEOUT_S, OverlayStore
from llamaship.paths import DataDirs
from llamaship_contract.detection import DetectionReport
from llamaship_contract.errors import LlamashipError
from llamaship_contract.launch import ProbeResult
from llamaship_contract.names import INDEX_NAME
from llamaship_contract.overlay import LayerKind
from llamaship_contract.trust import TrustedKeys, trusted

if TYPE_CHECKING:
    from llamaship.config import Settings

_log = logging.getLogger(__name__)
T = TypeVar("T")

Phase = Literal["index", "download", "verify", "extract", "probe", "activate", "done"]
ProbeFn = Callable[[Path, Path, float], ProbeResult | None]
"""`(module, runtime_lib_dir, timeout_s)`; raises a LlamashipError when the overlay fails."""


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


def _default_probe(module: Path, runtime_lib_dir: Path, timeout: float) -> ProbeResult:
    from llamaship.launch.probe import run_probe  # lazy: it starts a child process

    return run_probe(module, runtime_lib_dir, timeout)


class Installer:
    """Runs the install pipeline for one data directory."""

    def __init__(
        self,
        dirs: DataDirs,
        trusted_keys: TrustedKeys | Sequence[str],
        *,
        probe: ProbeFn | None = None,
        progress: ProgressFn | None = None,
        options: InstallOptions | None = None,
        observer: InstallObserver = ignore_step,
    ) -> None:
        """`observer` is told each step the install reaches (`llamaship.overlay.checkpoints`)."""
        self.dirs = dirs
        self.store = OverlayStore(dirs)
        self.trusted_keys = trusted(trusted_keys)
        self.probe = probe or _default_probe
        self.options = options or InstallOptions()
        self._progress = progress
        self._observer = observer
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
            with Fetcher(self.options.limits) as fetcher:
                available = self.find(index_location, target, fetcher, "cuda", skip_quarantined)
                return self._install(available, fetcher)

    def find(
        self,
        index_location: str,
        target: Target,
        fetcher: Fetcher,
        kind: LayerKind,
        skip_quarantined: bool,
    ) -> AvailableOverlay:
        """The verified `kind` release for `target` (call under the install lock); a
        quarantined one is refused when `skip_quarantined`."""
        self.report("index", message=f"reading the release index {index_location}")
        available = find_overlay(
            index_location, self.store, target, self.trusted_keys, fetcher, kind=kind
        )
        self._observer("index")
        version = available.entry.overlay_version
        reason = self.store.quarantine_reason(version)
        if skip_quarantined and reason is not None:
            msg = (
                f"overlay {version} is quarantined ({reason}); install it explicitly "
                "with `llamaship overlay install` to retry"
            )
            raise QuarantinedRelease(msg)
        return available

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

        def adopt() -> InstalledOverlay:
            self._observer("renamed")
            self._probe(record)
            self._observer("probed")
            self.report("activate", message=f"activating overlay {record.overlay_version}")
            return self.store.activate(record, self._observer)

        installed = self.bring_in(missing, fetcher, adopt)
        self.store.release_quarantine(record.overlay_version)
        self.report("done", message=f"overlay {record.overlay_version} is active")
        return InstallResult(
            installed,
            changed=True,
            fetched_layers=tuple(layer.id for layer in missing),
            reused_layers=reused,
        )

    def bring_in(
        self, missing: Sequence[VerifiedLayer], fetcher: Fetcher, adopt: Callable[[], T]
    ) -> T:
        """Fetch and unpack the `missing` layers, then `adopt` them (probe them, point at them);
        on any failure nothing is adopted, downloads are removed and unused layers go."""
        fetched: dict[str, FetchedFile] = {}
        adopted = False
        try:
            self._check_space(missing)
            self._fetch(missing, fetcher, fetched)
            for layer in missing:
                self._unpack(layer, fetched.pop(layer.id))
            result = adopt()
            adopted = True
        finally:
            for leftover in fetched.values():
                if leftover.owned:
                    leftover.path.unlink(missing_ok=True)
            if not adopted:
                self.store.collect_garbage()
        return result

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

            fetched[layer.id] = fetcher.fetch(
                layer.archive_location,
                self.dirs.downloads,
                archive.name,
                size=archive.size,
                sha256=archive.sha256,
                progress=self._archive_progress(finished),
            )
            finished += archive.size
            self.report("verify", done=finished, message=f"{archive.name}: size and sha256 match")

    def _archive_progress(self, base: int) -> Callable[[int, int], None]:
        """Progress of one archive's download, counted from `base`; the first report (its first
        chunk is on disk) tells the observer `download`."""
        started = False

        def progress(done: int, _total: int) -> None:
            nonlocal started
            if not started:
                started = True
                self._observer("download")
            self.report(done=base + done)

        return progress

    def _unpack(self, layer: VerifiedLayer, archive: FetchedFile) -> None:
        self.report("extract", message=f"unpacking {layer.manifest.archive.name}")
        staging = self.store.new_staging_dir()
        try:
            extract_layer(
                archive.path,
                staging,
                layer.manifest,
                max_unpacked_bytes=self.options.max_unpacked_bytes,
                observer=self._observer,
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
                installed.module, installed.runtime_lib_dir, self.options.probe_timeout_s
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
    trusted_keys: TrustedKeys | Sequence[str],
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
    trusted_keys: TrustedKeys | Sequence[str] | None = None,
) -> InstallOutcome:
    """At launch: install the newest overlay for this machine from `settings.release_url`.

    Never raises for an expected failure: skips without a release URL, skips a quarantined
    release, does not wait while another process installs, and on any failure returns
    `status="failed"` with the reason, leaving the active overlay (or CPU) in place.
    `trusted_keys`: the release keys (default: the bundled ones).
    """
    from llamaship.io.trusted_keys import trusted_keys as resolve_trusted_keys

    store = OverlayStore(dirs)
    if settings.release_url is None:
        return InstallOutcome(
            "skipped", "no release URL is configured (LLAMASHIP_RELEASE_URL)", store.active()
        )
    try:
        target = Target.current(report, bundle_llama_cpp_version)
        installer = Installer(
            dirs,
            resolve_trusted_keys(trusted_keys),
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

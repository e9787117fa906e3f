"""The installed overlay store under `DataDirs.overlays`.

Layout: `layers/<layer id>/` (verified, immutable), `active.json` and `previous.json` (which
layers make the active and the previous overlay), `quarantine.json` (overlay versions not to
use, and why); their documents are declared in `llamaship_contract.state`.
A layer directory only ever appears by an atomic rename of a fully verified staging directory
and only disappears by an atomic rename into `.trash-*`, so `layers/<id>` existing means the
layer is complete. Pointer files are replaced atomically. Switching overlays never renames or
deletes a layer in use: each version has its own directory and only the pointer changes.
Unreferenced layers are removed afterwards; one that cannot be (Windows refuses to rename or
delete a DLL a running process has loaded) stays and is removed at a later launch. Every
change to layers or pointers happens under the install lock (`OverlayStore.install_lock`).
`quarantine.json` and `DataDirs.state/accepted_serial.json` (the newest index and manifest
serials accepted, against replays) share a small state lock instead, so the launch can
quarantine while an install runs.
Broken state files never raise: they are treated as absent and the reason is logged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from llamaship.io.fs import TEMP_SUFFIX, atomic_write_bytes, fsync_dir
from llamaship.overlay.checkpoints import InstallObserver, ignore_step
from llamaship.overlay.installed import (
    LLAMA_LAYER,
    RUNTIME_LAYER,
    AcceptedSerials,
    InstalledOverlay,
    OverlayRecord,
    cuda_module_path,
    runtime_lib_subdir,
)
from llamaship.paths import DataDirs
from llamaship_contract.document import (
    Document,
    dump_document_pretty,
    parse_document,
)
from llamaship_contract.errors import ContractError, LlamashipError
from llamaship_contract.names import PART_SUFFIX, ExitStatus
from llamaship_contract.state import (
    ACCEPTED_SERIAL_FILE,
    ACTIVE_FILE,
    PREVIOUS_FILE,
    QUARANTINE_FILE,
    VULKAN_FILE,
    AcceptedSerialsFile,
    OverlayPointer,
    QuarantineList,
    VulkanPointer,
)

if TYPE_CHECKING:
    from filelock import FileLock

_log = logging.getLogger(__name__)

# The files this module writes atomically; their temp files are leftovers after a crash.
_POINTER_FILES = (ACTIVE_FILE, PREVIOUS_FILE, QUARANTINE_FILE, VULKAN_FILE)
_STATE_FILES = (ACCEPTED_SERIAL_FILE,)
STAGING_PREFIX = ".staging-"
TRASH_PREFIX = ".trash-"
INSTALL_LOCK = "overlay-install.lock"
STATE_LOCK = "overlay-state.lock"
# A partial download is kept this long for resuming (Range) by a later install, then removed.
PARTIAL_DOWNLOAD_MAX_AGE_S = 7 * 24 * 3600
# How long a state change waits for the install lock before giving up.
STATE_LOCK_TIMEOUT_S = 10.0
# How long an installer waits for another one to finish before failing with InstallBusy.
INSTALL_LOCK_TIMEOUT_S = 5.0


class StoreError(LlamashipError):
    """The overlay store cannot do what was asked."""

    exit_code = ExitStatus.STORE_STATE


class InstallBusy(StoreError):
    """Another process holds the overlay install lock."""

    exit_code = ExitStatus.INSTALL_BUSY


D = TypeVar("D", bound=Document)


def _write(path: Path, document: Document) -> None:
    atomic_write_bytes(path, dump_document_pretty(document))


class OverlayStore:
    """The installed overlays of one data directory."""

    def __init__(self, dirs: DataDirs, rename: Callable[[Path, Path], object] = os.rename) -> None:
        """`rename`: how directories are moved (tests inject a Windows-like refusal)."""
        self.dirs = dirs
        self._rename = rename
        self.root = dirs.overlays
        self.layers_dir = self.root / "layers"
        self._install_lock: FileLock | None = None
        self._state_lock: FileLock | None = None

    # -- locks ---------------------------------------------------------------------------------

    def _lock(self, name: str) -> FileLock:
        from filelock import FileLock  # lazy: the boot path only reads pointers

        self.dirs.locks.mkdir(parents=True, exist_ok=True)
        return FileLock(self.dirs.locks / name)

    @contextlib.contextmanager
    def install_lock(self, timeout: float = STATE_LOCK_TIMEOUT_S) -> Iterator[None]:
        """Hold the one-installer-at-a-time lock (re-entrant within this store object).

        Waits up to `timeout` seconds, then raises `InstallBusy`.
        """
        from filelock import Timeout

        if self._install_lock is None:
            self._install_lock = self._lock(INSTALL_LOCK)
        try:
            self._install_lock.acquire(timeout=timeout)
        except Timeout:
            msg = (
                f"another overlay install is running (lock {self._install_lock.lock_file} is "
                "held); wait for it to finish, then try again"
            )
            raise InstallBusy(msg) from None
        try:
            yield
        finally:
            self._install_lock.release()

    @contextlib.contextmanager
    def _state_locked(self) -> Iterator[None]:
        from filelock import Timeout

        if self._state_lock is None:
            self._state_lock = self._lock(STATE_LOCK)
        try:
            self._state_lock.acquire(timeout=STATE_LOCK_TIMEOUT_S)
        except Timeout:
            msg = (
                f"the overlay state lock {self._state_lock.lock_file} stayed held for "
                f"{STATE_LOCK_TIMEOUT_S:g} s; is another llamaship process stuck? Try again"
            )
            raise StoreError(msg) from None
        try:
            yield
        finally:
            self._state_lock.release()

    # -- reading -------------------------------------------------------------------------------

    def layer_dir(self, layer_id: str) -> Path:
        return self.layers_dir / layer_id

    def has_layer(self, layer_id: str) -> bool:
        """Whether a complete, verified layer with this id is installed."""
        return self.layer_dir(layer_id).is_dir()

    def _read_state(self, path: Path, model: type[D]) -> D | None:
        """The state file as `model`, or None if it is missing or invalid (logged)."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            _log.warning("ignoring %s: it cannot be read (%s)", path, error)
            return None
        try:
            return parse_document(model, data, str(path))
        except ContractError as error:
            _log.warning("ignoring %s", error)
            return None

    def _read_record(self, name: str) -> OverlayRecord | None:
        return self._read_state(self.root / name, OverlayPointer)

    def _installed(self, record: OverlayRecord | None, name: str) -> InstalledOverlay | None:
        if record is None:
            return None
        module = self.layer_dir(record.layers[LLAMA_LAYER]) / cuda_module_path()
        runtime_lib_dir = self.layer_dir(record.layers[RUNTIME_LAYER]) / runtime_lib_subdir()
        for needed in (module, runtime_lib_dir):
            if not needed.exists():
                _log.warning("ignoring %s: %s is missing", name, needed)
                return None
        return InstalledOverlay(record=record, module=module, runtime_lib_dir=runtime_lib_dir)

    def installed(self, record: OverlayRecord) -> InstalledOverlay:
        """`record` with its layer paths; raises StoreError if a layer is not installed."""
        installed = self._installed(record, f"overlay {record.overlay_version}")
        if installed is None:
            msg = (
                f"overlay {record.overlay_version} is incomplete: a layer directory is "
                f"missing under {self.layers_dir}; install it again"
            )
            raise StoreError(msg)
        return installed

    def active(self) -> InstalledOverlay | None:
        """The active overlay, or None (CPU) when the pointer or a layer is missing or broken."""
        return self._installed(self._read_record(ACTIVE_FILE), str(self.root / ACTIVE_FILE))

    def previous(self) -> InstalledOverlay | None:
        """The overlay that was active before the current one, if it is still complete."""
        return self._installed(self._read_record(PREVIOUS_FILE), str(self.root / PREVIOUS_FILE))

    def quarantined(self) -> dict[str, str]:
        """Every quarantined overlay version and why; a broken file reads as empty (logged)."""
        data = self._read_state(self.root / QUARANTINE_FILE, QuarantineList)
        return {} if data is None else dict(data.overlays)

    def quarantine_reason(self, version: str) -> str | None:
        return self.quarantined().get(version)

    def accepted_serials(self) -> AcceptedSerials:
        """What `accept_serials` recorded; a missing or broken file reads as nothing (logged)."""
        data = self._read_state(self.dirs.state / ACCEPTED_SERIAL_FILE, AcceptedSerialsFile)
        if data is None:
            return AcceptedSerials()
        return AcceptedSerials(index=data.index_serial, manifest=data.manifest_serial)

    # -- changing ------------------------------------------------------------------------------

    def accept_serials(self, index: int, manifest: int) -> None:
        """Raise the accepted serials to at least `index` and `manifest` (never lowers them)."""
        with self._state_locked():
            current = self.accepted_serials()
            if index <= current.index and manifest <= current.manifest:
                return
            _write(
                self.dirs.state / ACCEPTED_SERIAL_FILE,
                AcceptedSerialsFile(
                    index_serial=max(index, current.index),
                    manifest_serial=max(manifest, current.manifest),
                ),
            )

    def quarantine(self, version: str, reason: str) -> None:
        """Record that overlay `version` must not be used, and why."""
        with self._state_locked():
            entries = self.quarantined()
            entries[version] = reason
            _write(self.root / QUARANTINE_FILE, QuarantineList(overlays=entries))
        _log.warning("quarantined overlay %s: %s", version, reason)

    def release_quarantine(self, version: str) -> None:
        """Forget a quarantine (after the version installed and probed successfully again)."""
        with self._state_locked():
            entries = self.quarantined()
            if entries.pop(version, None) is not None:
                _write(self.root / QUARANTINE_FILE, QuarantineList(overlays=entries))

    def activate(
        self, record: OverlayRecord, observer: InstallObserver = ignore_step
    ) -> InstalledOverlay:
        """Make `record` active, keeping the current active overlay as the previous one
        (`observer` is told `switch` between the two writes)."""
        with self.install_lock():
            installed = self.installed(record)
            current = self._read_record(ACTIVE_FILE)
            if current is not None and current != record:
                _write(self.root / PREVIOUS_FILE, current)
            observer("switch")
            _write(self.root / ACTIVE_FILE, record)
            self.collect_garbage()
        _log.info("overlay %s is active", record.overlay_version)
        return installed

    def vulkan(self) -> VulkanPointer | None:
        """The installed Vulkan overlay's pointer (`vulkan.json`), or None."""
        return self._read_state(self.root / VULKAN_FILE, VulkanPointer)

    def set_vulkan(self, pointer: VulkanPointer | None) -> None:
        """Install `pointer` as the Vulkan overlay, or remove it (None); unused layers go."""
        with self.install_lock():
            if pointer is None:
                self._unlink_durably(self.root / VULKAN_FILE)
            else:
                _write(self.root / VULKAN_FILE, pointer)
            self.collect_garbage()

    def rollback(self) -> InstalledOverlay:
        """Swap the active and the previous overlay; raises StoreError if there is no previous."""
        with self.install_lock():
            previous = self.previous()
            if previous is None:
                msg = (
                    "there is no previous overlay to roll back to (see `llamaship overlay status`)"
                )
                raise StoreError(msg)
            current = self._read_record(ACTIVE_FILE)
            if current is not None:
                _write(self.root / PREVIOUS_FILE, current)
            else:
                self._unlink_durably(self.root / PREVIOUS_FILE)
            _write(self.root / ACTIVE_FILE, previous.record)
            self.collect_garbage()
        _log.info("rolled back to overlay %s", previous.overlay_version)
        return previous

    def remove(self) -> OverlayRecord | None:
        """Deactivate the overlay (the app runs on CPU); it stays as `previous` for rollback."""
        with self.install_lock():
            current = self._read_record(ACTIVE_FILE)
            if current is not None:
                _write(self.root / PREVIOUS_FILE, current)
            self._unlink_durably(self.root / ACTIVE_FILE)
            self.collect_garbage()
        return current

    def new_staging_dir(self) -> Path:
        """A fresh, empty directory on the store's file system for one layer's extraction."""
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
        staging.mkdir()
        return staging

    def commit_layer(self, staging: Path, layer_id: str) -> Path:
        """Rename a verified staging directory into `layers/<layer_id>` (atomic)."""
        self.layers_dir.mkdir(parents=True, exist_ok=True)
        target = self.layer_dir(layer_id)
        staging.rename(target)
        fsync_dir(self.layers_dir)
        fsync_dir(self.root)
        return target

    def discard(self, path: Path) -> bool:
        """Remove a staging or layer directory: atomic rename out of the way, then delete.

        Returns False, leaving `path` whole, when it cannot be moved (a file in it is in use
        on Windows); files that cannot be deleted stay in `.trash-*` for `cleanup_leftovers`.
        """
        if not path.exists():
            return True
        trash = self.root / f"{TRASH_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}"
        try:
            self._rename(path, trash)
        except OSError as error:
            _log.info(
                "keeping %s for now (%s); a later launch removes it", path, error.strerror or error
            )
            return False
        fsync_dir(path.parent)
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def collect_garbage(self) -> list[str]:
        """Remove layer dirs neither the active nor the previous pointer names; caller locks."""
        referenced: set[str] = set()
        for name in (ACTIVE_FILE, PREVIOUS_FILE):
            record = self._read_record(name)
            if record is not None:
                referenced.update(record.layers.values())
        vulkan = self.vulkan()
        if vulkan is not None:
            referenced.add(vulkan.layer)
        removed: list[str] = []
        if self.layers_dir.is_dir():
            for layer in sorted(self.layers_dir.iterdir()):
                if layer.name not in referenced and self.discard(layer):
                    removed.append(layer.name)
        if removed:
            _log.info("removed unused overlay layers: %s", ", ".join(removed))
        return removed

    def cleanup_leftovers(self) -> list[str]:
        """Remove what an interrupted install left behind; call at launch. Never raises.

        Removes `.staging-*` and `.trash-*` dirs, half-written pointer temp files, stale partial
        downloads, and unreferenced layers. Partial downloads younger than
        `PARTIAL_DOWNLOAD_MAX_AGE_S` are kept so the next install resumes them. Does nothing
        while another process installs (it holds the lock and owns those files).
        """
        removed: list[str] = []
        try:
            with self.install_lock(timeout=0), self._state_locked():
                removed += self._remove_leftovers()
                removed += self.collect_garbage()
        except StoreError as error:
            _log.info("skipping overlay cleanup: %s", error)
        except OSError as error:
            _log.warning("overlay cleanup stopped early: %s", error)
        return removed

    def _remove_leftovers(self) -> list[str]:
        removed: list[str] = []
        if self.root.is_dir():
            for entry in self.root.iterdir():
                if entry.name.startswith((STAGING_PREFIX, TRASH_PREFIX)) and entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(str(entry))
        for directory, names in ((self.root, _POINTER_FILES), (self.dirs.state, _STATE_FILES)):
            for name in names:
                for temp in directory.glob(f".{name}.*{TEMP_SUFFIX}"):
                    temp.unlink(missing_ok=True)
                    removed.append(str(temp))
        if self.dirs.downloads.is_dir():
            now = time.time()
            for entry in self.dirs.downloads.iterdir():
                stale = now - entry.stat().st_mtime > PARTIAL_DOWNLOAD_MAX_AGE_S
                is_partial = entry.name.endswith((PART_SUFFIX, f"{PART_SUFFIX}.meta"))
                if entry.is_file() and (stale or not is_partial):
                    entry.unlink(missing_ok=True)
                    removed.append(str(entry))
        if removed:
            _log.info("removed overlay install leftovers: %s", ", ".join(removed))
        return removed

    def _unlink_durably(self, path: Path) -> None:
        if path.exists():
            path.unlink()
            fsync_dir(path.parent)

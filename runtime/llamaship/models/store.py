"""Pulled models under `LLAMASHIP_HOME/models`: pull (resumable, hash-checked), list, remove,
use.

A pull downloads with the overlay's `Fetcher` (total deadlines, raw bounded reads, free space
checked before each attempt, `Range` + `If-Range` resume) into `models/.partial/<file>.part`,
checks the sha256 and the GGUF magic, then renames the file into `models/` in one step: a file
in `models/` is always whole. An interrupted pull keeps its `.part` for the next one; a wrong
hash or a non-GGUF file leaves nothing behind. `use` records the choice in settings.json.

The sha256 comes from the catalogue, from the user (`--sha256`), or from the hub (`hub.py`:
asked before the download, for catalogue entries with `hash_from: hub` and hub URLs). The
hash and size the hub published are recorded in `models/.verified/<file>.json` before the
download: an installed copy is checked against them without asking the hub again.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import stat
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from llamaship.errors import ConfigError
from llamaship.io.fetch import Fetcher
from llamaship.io.fs import ensure_free_space, free_bytes, fsync_dir
from llamaship.io.http_session import DownloadLimits
from llamaship.io.local_files import verify_file
from llamaship.io.transfer import FetchedFile, IntegrityError, ProgressFn
from llamaship.models import verified
from llamaship.models.catalogue import bundled_catalogue
from llamaship.models.hub import Hub, HubHashMissing, published_file
from llamaship.models.settings import models_dir, read_user_settings, update_user_settings
from llamaship.paths import DataDirs
from llamaship_contract.errors import LlamashipError
from llamaship_contract.models import CatalogueEntry, ModelCatalogue
from llamaship_contract.names import PART_SUFFIX, ExitStatus
from llamaship_contract.textsafe import printable

_log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
PARTIAL_DIR = ".partial"
# The largest file a URL without a catalogue size may announce (the biggest GGUFs are ~250 GB).
MAX_MODEL_SIZE = 512 * 2**30
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,194}\.gguf")


class ModelError(LlamashipError):
    """A model command cannot do what was asked; the message says why and what to do."""

    exit_code = ExitStatus.CONFIG


class UnknownModel(ModelError):
    """The name is neither in the catalogue nor a URL."""


class UnverifiedModel(ModelError):
    """The model's sha256 is unknown and the user neither gave one nor accepted that."""


class ModelNotInstalled(ModelError):
    """`use` or `remove` named a model that is not in `LLAMASHIP_HOME/models`."""


class NotAGguf(ModelError):
    """The download is not a GGUF model file."""


class ModelIntegrityError(IntegrityError):
    """The download does not match the sha256 the model was pulled with."""


class PullBusy(LlamashipError):
    """Another pull of the same file is running."""


@dataclass(frozen=True)
class PullSource:
    """What one pull fetches: resolved from a catalogue name or a URL by `ModelStore.source`."""

    name: str
    url: str
    file_name: str
    size: int | None
    sha256: str | None
    """None: the hub is asked (`hub_url`), or pulled unverified (the user accepted that)."""
    hub_url: str | None = None
    """Where the hub publishes the sha256 and size, asked before downloading (none known)."""
    accept_unverified: bool = False
    vouched_by: str = "the catalogue"
    """Who gave the sha256, for messages: the catalogue, --sha256, the hub."""


@dataclass(frozen=True)
class InstalledModel:
    """A whole model file in `LLAMASHIP_HOME/models` (its catalogue entry, if it has one)."""

    name: str
    path: Path
    size: int
    entry: CatalogueEntry | None


class ModelStore:
    """The models of one LLAMASHIP_HOME; `catalogue` defaults to the bundled one."""

    def __init__(
        self,
        home: Path,
        catalogue: ModelCatalogue | None = None,
        *,
        limits: DownloadLimits | None = None,
        hub: Hub | None = None,
        free_space: Callable[[Path], int] = free_bytes,
    ) -> None:
        """`hub`: where hub files come from and their hashes are asked (default: the real
        hub); `free_space` measures the bytes free in a directory (checked before a pull)."""
        self.home = home
        self.dir = models_dir(home)
        self.catalogue = bundled_catalogue() if catalogue is None else catalogue
        self.limits = limits
        self.hub = Hub() if hub is None else hub
        self.free_space = free_space

    @property
    def partial_dir(self) -> Path:
        return self.dir / PARTIAL_DIR

    # -- reading -----------------------------------------------------------------------------

    def installed(self) -> list[InstalledModel]:
        """Every whole model file, by file name."""
        if not self.dir.is_dir():
            return []
        found = []
        for path in sorted(self.dir.iterdir()):
            if not _FILE_NAME.fullmatch(path.name):
                continue
            status = path.lstat()
            if stat.S_ISREG(status.st_mode):
                entry = self.catalogue.find(path.name)
                name = path.name if entry is None else entry.name
                found.append(InstalledModel(name, path, status.st_size, entry))
        return found

    def find_installed(self, name: str) -> InstalledModel:
        """The installed model called `name` (catalogue name or file name)."""
        for model in self.installed():
            if name in (model.name, model.path.name):
                return model
        names = ", ".join(model.name for model in self.installed()) or "none"
        msg = (
            f"the model '{printable(name, 100)}' is not installed (installed: {names}); "
            "pull it first with `llamaship models pull NAME`"
        )
        raise ModelNotInstalled(msg)

    def active(self) -> str | None:
        """The file name chosen in settings.json, if any."""
        return read_user_settings(self.home).model

    def default_chat(self) -> CatalogueEntry:
        """The catalogue's first chat model: what the one-click setup pulls."""
        entry = next((e for e in self.catalogue.models if e.purpose == "chat"), None)
        if entry is None:
            msg = "the model catalogue has no chat model: pull one by URL with --sha256"
            raise UnknownModel(msg)
        return entry

    # -- pulling -----------------------------------------------------------------------------

    def source(
        self, name_or_url: str, sha256: str | None = None, accept_unverified: bool = False
    ) -> PullSource:
        """What pulling `name_or_url` fetches; refuses an unknown name, a bad hash, or an
        unverified model without `sha256` or `accept_unverified`."""
        if sha256 is not None:
            sha256 = sha256.strip().lower()
            if not _SHA256.fullmatch(sha256):
                msg = f"--sha256 '{printable(sha256, 80)}' is not 64 hex digits"
                raise ModelError(msg)
        scheme = urllib.parse.urlsplit(name_or_url).scheme.lower()
        if scheme in ("http", "https"):
            entry = next((e for e in self.catalogue.models if e.url == name_or_url), None)
            if entry is None:
                return self._url_source(name_or_url, sha256, accept_unverified)
        else:
            entry = self.catalogue.find(name_or_url)
            if entry is None:
                raise self._unknown(name_or_url)
        url = self.hub.locate(entry.url) or entry.url
        if entry.sha256 is not None:
            if sha256 is not None and sha256 != entry.sha256:
                msg = (
                    f"--sha256 {sha256} is not the catalogue's sha256 of {entry.name} "
                    f"({entry.sha256}); leave --sha256 out to use the catalogue's"
                )
                raise ModelError(msg)
            return PullSource(entry.name, url, entry.file_name, entry.size, entry.sha256)
        if sha256 is None and entry.hash_from == "hub":
            hub_url = self.hub.locate(entry.url)
            return PullSource(
                entry.name, url, entry.file_name, entry.size, None, hub_url, accept_unverified
            )
        self._refuse_unverified(entry.name, sha256, accept_unverified)
        return PullSource(
            entry.name, url, entry.file_name, entry.size, sha256, vouched_by="--sha256"
        )

    def _url_source(self, url: str, sha256: str | None, accept_unverified: bool) -> PullSource:
        path = urllib.parse.urlsplit(url).path
        file_name = urllib.parse.unquote(path.rsplit("/", 1)[-1])
        if not _FILE_NAME.fullmatch(file_name):
            msg = (
                f"the URL {printable(url)} does not end in a plain .gguf file name (letters, "
                "digits, '.', '_', '-'): point it at the .gguf file itself"
            )
            raise ModelError(msg)
        hub_url = self.hub.locate(url)
        if sha256 is None and hub_url is not None:
            return PullSource(file_name, hub_url, file_name, None, None, hub_url, accept_unverified)
        self._refuse_unverified(file_name, sha256, accept_unverified)
        return PullSource(file_name, url, file_name, None, sha256, vouched_by="--sha256")

    def _refuse_unverified(self, name: str, sha256: str | None, accept_unverified: bool) -> None:
        if sha256 is None and not accept_unverified:
            msg = (
                f"{printable(name, 200)} has no known sha256, so its download cannot be "
                "checked: pass --sha256 HASH (from the model's publisher), or "
                "--accept-unverified to take whatever arrives"
            )
            raise UnverifiedModel(msg)
        if sha256 is None:
            _log.warning(
                "pulling %s WITHOUT checking its content (--accept-unverified)",
                printable(name, 200),
            )

    def _unknown(self, name: str) -> UnknownModel:
        names = [entry.name for entry in self.catalogue.models]
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        msg = (
            f"'{printable(name, 100)}' is not in the model catalogue: {hint}known models: "
            f"{', '.join(names) or 'none'}; or pull a URL of a .gguf file with --sha256"
        )
        return UnknownModel(msg)

    def pull(self, source: PullSource, progress: ProgressFn | None = None) -> InstalledModel:
        """Download `source` into `LLAMASHIP_HOME/models` (resuming a partial download); an
        installed copy that checks out is kept as it is."""
        dest = self.dir / source.file_name
        with self._pull_lock(source.file_name):
            recorded = self._recorded(source)
            if recorded is not None and self._intact(dest, recorded):
                _log.info("%s is already installed", source.name)
                return self._installed(dest)
            self.partial_dir.mkdir(parents=True, exist_ok=True)
            try:
                with Fetcher(self.limits) as fetcher:
                    source = self._vouched(source, fetcher)
                    if self._intact(dest, source):
                        _log.info("%s is already installed", source.name)
                        self._record(source)
                        return self._installed(dest)
                    size = source.size or fetcher.content_length(
                        source.url, max_size=MAX_MODEL_SIZE, what=f"model {source.name}"
                    )
                    self._check_space(source, size)
                    self._record(source)
                    fetched = self._fetch(fetcher, source, size, progress)
                _check_gguf(fetched.path, source.name)
                os.replace(fetched.path, dest)
                fsync_dir(self.dir)
            finally:
                _remove_if_empty(self.partial_dir)
        if source.sha256 is None:
            _log.warning(
                "%s was not verified; its sha256 is %s: pass --sha256 %s next time",
                source.name,
                fetched.sha256,
                fetched.sha256,
            )
        return self._installed(dest)

    def _vouched(self, source: PullSource, fetcher: Fetcher) -> PullSource:
        """`source` with the sha256 and size the hub publishes, when it has none of its own."""
        if source.sha256 is not None or source.hub_url is None:
            return source
        try:
            published = published_file(fetcher, source.hub_url, f"model {source.name}")
        except HubHashMissing:
            if not source.accept_unverified:
                raise
            self._refuse_unverified(source.name, None, accept_unverified=True)
            return source
        if source.size is not None and source.size != published.size:
            msg = (
                f"the hub publishes {published.size} bytes for {source.name}, the catalogue "
                f"says {source.size}: the hub holds another file; update the application"
            )
            raise ModelError(msg)
        return replace(source, sha256=published.sha256, size=published.size, vouched_by="the hub")

    def _check_space(self, source: PullSource, size: int) -> None:
        part = self.partial_dir / f"{source.file_name}{PART_SUFFIX}"
        kept = part.stat().st_size if part.is_file() else 0
        needed = max(size - kept, 0)
        ensure_free_space(self.partial_dir, needed, f"the model {source.name}", self.free_space)

    def _fetch(
        self, fetcher: Fetcher, source: PullSource, size: int, progress: ProgressFn | None
    ) -> FetchedFile:
        try:
            return fetcher.fetch(
                source.url,
                self.partial_dir,
                source.file_name,
                size=size,
                sha256=source.sha256,
                progress=progress,
            )
        except IntegrityError:
            verified.forget(self.dir, source.file_name)
            msg = (
                f"the download of {printable(source.name, 200)} is corrupted or was tampered "
                f"with: it does not match the sha256 {source.vouched_by} gives "
                f"({source.sha256}); it was deleted. Pull it again; "
                "if this repeats, the server or a proxy on the way delivers another file: "
                "try another network, or tell the model's publisher"
            )
            raise ModelIntegrityError(msg) from None

    def _record(self, source: PullSource) -> None:
        """Keep the sha256 and size the hub published for this pull beside the model (the
        catalogue's and the user's are given again on the next pull)."""
        if source.hub_url is not None and source.sha256 is not None and source.size is not None:
            record = verified.Verified(source.url, source.sha256, source.size, source.vouched_by)
            verified.save(self.dir, source.file_name, record)

    def _recorded(self, source: PullSource) -> PullSource | None:
        """`source` with the sha256 and size an earlier pull of the same URL recorded (itself
        when it brings its own sha256; None without a matching record)."""
        if source.sha256 is not None:
            return source
        record = verified.load(self.dir, source.file_name)
        if record is None or record.url != source.url:
            return None
        return replace(source, sha256=record.sha256, size=record.size, vouched_by=record.vouched_by)

    def verified_sha256(self, file_name: str) -> str | None:
        """The sha256 the installed `file_name` was verified against, if it was."""
        record = verified.load(self.dir, file_name)
        return None if record is None else record.sha256

    def _intact(self, dest: Path, source: PullSource) -> bool:
        if not dest.is_file():
            return False
        if source.sha256 is None:
            return source.hub_url is None  # an unverified pull keeps what it has
        try:
            verify_file(
                dest, source.size or dest.stat().st_size, source.sha256, f"model {source.name}"
            )
        except IntegrityError as error:
            _log.warning(
                "the installed copy is not the expected file (%s); pulling it again", error
            )
            return False
        return True

    def _installed(self, path: Path) -> InstalledModel:
        return next(model for model in self.installed() if model.path == path)

    @contextmanager
    def _pull_lock(self, file_name: str) -> Iterator[None]:
        from filelock import FileLock, Timeout

        locks = DataDirs(self.home).locks
        locks.mkdir(parents=True, exist_ok=True)
        lock = FileLock(locks / f"model-{file_name}.lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            msg = f"{file_name} is being pulled already; wait for that pull to finish"
            raise PullBusy(msg) from None
        try:
            yield
        finally:
            lock.release()

    # -- changing ----------------------------------------------------------------------------

    def use(self, name: str) -> InstalledModel:
        """Record the installed model `name` as the one to serve (settings.json)."""
        model = self.find_installed(name)
        update_user_settings(self.home, {"model": model.path.name}, "the model choice")
        return model

    def remove(self, name: str) -> InstalledModel:
        """Delete the installed model `name` and any partial download of it; a removed model
        that was chosen is no longer (settings.json)."""
        model = self.find_installed(name)
        if read_user_settings(self.home).model == model.path.name:
            update_user_settings(self.home, {"model": None}, "the model choice")
        try:
            model.path.unlink()
        except OSError as error:
            msg = f"cannot remove {model.path}: {error.strerror or error}"
            raise ConfigError(msg) from None
        for leftover in (f"{model.path.name}{PART_SUFFIX}", f"{model.path.name}{PART_SUFFIX}.meta"):
            (self.partial_dir / leftover).unlink(missing_ok=True)
        verified.forget(self.dir, model.path.name)
        _remove_if_empty(self.partial_dir)
        fsync_dir(self.dir)
        return model


def _check_gguf(path: Path, name: str) -> None:
    """Refuse (and delete) a download that is not a GGUF file."""
    with path.open("rb") as handle:
        magic = handle.read(len(GGUF_MAGIC))
    if magic != GGUF_MAGIC:
        path.unlink()
        msg = (
            f"the download of {printable(name, 200)} is not a GGUF model file (it starts "
            f"with {magic!r}); it was deleted: point to a .gguf file"
        )
        raise NotAGguf(msg)


def _remove_if_empty(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:
        pass  # not empty (a resumable partial download), or already gone

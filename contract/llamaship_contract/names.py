"""Names both sides share: file names, suffixes and the exit statuses of every command."""

from __future__ import annotations

from enum import IntEnum

INDEX_NAME = "releases.json"
SIGNATURE_SUFFIX = ".sig"
TRUSTED_KEYS_NAME = "trusted_keys.json"  # the public keys a bundle trusts, by role
ARCHIVE_SUFFIX = ".tar.zst"
PART_SUFFIX = ".part"
BUNDLE_MANIFEST_NAME = "bundle-manifest.json"
ADMIN_TOKEN_NAME = "admin-token"  # in LLAMASHIP_HOME: the admin API's bearer token


class ExitStatus(IntEnum):
    """Exit statuses of `llamaship`, `backend` and `python -m llamaship_build`: one meaning each.

    `docs/runtime.md` shows this table; a test keeps the two in step.
    """

    OK = 0
    ERROR = 1
    CONFIG = 2
    BIND = 3
    DOCUMENT_INVALID = 4
    DISK_FULL = 5
    STORE_STATE = 6
    INSTALL_BUSY = 7
    DOWNLOAD = 8
    INTEGRITY = 9
    ARCHIVE = 10
    OVERLAY_REJECTED = 11
    SIGNATURE = 12
    BUILD_FAILED = 13
    LOCK_STALE = 14
    INDEX_EXPIRED = 15
    RESTART = 75
    INTERRUPTED = 130


# What each status means, as docs/runtime.md shows it (`python -m llamaship_build
# exit-statuses` writes that table; a test fails when the two differ).
EXIT_STATUS_MEANINGS: dict[ExitStatus, str] = {
    ExitStatus.OK: "success (`detect` exits 0 whatever the hardware)",
    ExitStatus.ERROR: "an unexpected error (the message says what failed)",
    ExitStatus.CONFIG: "invalid configuration: a setting, `.env` file, command-line option, "
    "model file or key file (the message names it)",
    ExitStatus.BIND: "the listening address cannot be bound",
    ExitStatus.DOCUMENT_INVALID: "an overlay manifest, release index or other document is "
    "malformed",
    ExitStatus.DISK_FULL: "not enough free disk space for the overlay",
    ExitStatus.STORE_STATE: "the overlay store's state cannot be changed",
    ExitStatus.INSTALL_BUSY: "another overlay install is running",
    ExitStatus.DOWNLOAD: "a download failed (network, timeout, size cap)",
    ExitStatus.INTEGRITY: "a download does not match its signed sha256",
    ExitStatus.ARCHIVE: "an overlay archive is unsafe or does not match its manifest",
    ExitStatus.OVERLAY_REJECTED: "the overlay does not fit this bundle/machine, is a replay, "
    "or failed its probe",
    ExitStatus.SIGNATURE: "a signature is missing, malformed, from an unknown key or wrong",
    ExitStatus.BUILD_FAILED: "`python -m llamaship_build`: a build step failed",
    ExitStatus.LOCK_STALE: "`python -m llamaship_build`: a requirements lock is stale "
    "(`nox -s lock`)",
    ExitStatus.INDEX_EXPIRED: "the release index is past its expiry (an outdated or frozen "
    "index was served)",
    ExitStatus.RESTART: "restart requested with `LLAMASHIP_RESTART=exit` (`docs/restart.md`)",
    ExitStatus.INTERRUPTED: "interrupted by Ctrl-C (SIGINT); a partial download is kept and the "
    "same command resumes it",
}

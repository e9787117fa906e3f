"""Errors of the build side; each says what failed and how to fix it."""

from llamaship_contract.errors import LlamashipError
from llamaship_contract.names import ExitStatus


class BuildError(LlamashipError):
    """A build step failed."""

    exit_code = ExitStatus.BUILD_FAILED


class StaleLockError(BuildError):
    """A requirements lock no longer matches its `.in` file."""

    exit_code = ExitStatus.LOCK_STALE

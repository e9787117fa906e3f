"""Errors of the build side; each says what failed and how to fix it."""

from llamaship.errors import LlamashipError


class BuildError(LlamashipError):
    """A build step failed."""

    exit_code = 3


class StaleLockError(BuildError):
    """A requirements lock no longer matches its `.in` file."""

    exit_code = 4

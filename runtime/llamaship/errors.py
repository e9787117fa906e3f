"""Exception hierarchy of the runtime: libraries raise, the CLI turns these into exit codes."""

from llamaship_contract.names import ExitStatus


class LlamashipError(Exception):
    """Root of every error llamaship raises on purpose; the message says how to fix it."""

    exit_code: int = ExitStatus.ERROR


class ConfigError(LlamashipError):
    """A configuration value (default, .env, environment or CLI) is invalid."""

    exit_code = ExitStatus.CONFIG

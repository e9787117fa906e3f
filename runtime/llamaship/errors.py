"""Exception hierarchy of the runtime: libraries raise, the CLI turns these into exit codes."""

from llamaship_contract.errors import LlamashipError
from llamaship_contract.names import ExitStatus


class ConfigError(LlamashipError):
    """A configuration value (default, .env, environment or CLI) is invalid."""

    exit_code = ExitStatus.CONFIG

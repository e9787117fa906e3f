"""The commands of `llamaship` and of the bundle's `backend` executable.

Their entry points live in `llamaship_backend.cli`, which passes in the HTTP app `serve` runs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Mapping, Sequence

from llamaship import __version__
from llamaship.errors import LlamashipError

# Each command module exposes `add_parser(subparsers)` and `run(args) -> int`;
# they are imported only when chosen, so `backend detect` never imports the web stack.
_COMMANDS = {
    "serve": "llamaship.cli.serve",
    "detect": "llamaship.cli.detect",
    "overlay": "llamaship.cli.overlay",
    "keys": "llamaship.cli.keys",
    "probe": "llamaship.cli.probe",
    "status": "llamaship.cli.status",
    "fit": "llamaship.cli.fit",
    "models": "llamaship.cli.models",
    "open": "llamaship.cli.open_page",
}
_DEFAULT_COMMAND = "serve"
_NO_DEFAULT_COMMAND = frozenset({"-h", "--help", "--version"})
_ENV_FILE_HELP = (
    "read configuration from this .env file (default: LLAMASHIP_HOME/.env, "
    "and beside the bundle's executable)"
)


def _accept_env_file_everywhere(parser: argparse.ArgumentParser) -> None:
    """Let `--env-file` follow any (sub)command too; the last one given wins."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                subparser.add_argument("--env-file", default=argparse.SUPPRESS, help=_ENV_FILE_HELP)
                _accept_env_file_everywhere(subparser)


def build_parser(prog: str, commands: Mapping[str, str] = _COMMANDS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="llamaship: llama.cpp backend loader")
    parser.add_argument("--version", action="version", version=f"{prog} {__version__}")
    parser.add_argument("--env-file", help=_ENV_FILE_HELP)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in commands.items():
        module = importlib.import_module(module_name)
        module.add_parser(subparsers)
        subparsers.choices[name].set_defaults(_module=module_name)
    _accept_env_file_everywhere(parser)
    return parser


ServeApp = Callable[..., int]
"""`serve(state, on_listening)`: runs the HTTP app until stopped. The backend package passes
it in (`llamaship_backend.cli`): the runtime never imports the app it boots."""


def main(
    argv: Sequence[str] | None = None,
    prog: str = "llamaship",
    *,
    trusted_keys: Sequence[str] | None = None,
    serve_app: ServeApp | None = None,
    extra_commands: Mapping[str, str] | None = None,
) -> int:
    """Run one command; a `LlamashipError` becomes one line on stderr and its exit status.

    `trusted_keys`: the release public keys overlays must be signed with (default: the keys
    bundled with the application); a caller of this API may pass others, a user cannot.
    `serve_app` is what `serve` runs; `extra_commands` (name -> module) adds the commands of a
    package above the runtime (the backend's), which the runtime must not import itself.
    """
    commands = {**_COMMANDS, **(extra_commands or {})}
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not any(arg in commands for arg in args_list) and not _NO_DEFAULT_COMMAND & set(args_list):
        args_list.insert(0, _DEFAULT_COMMAND)
    parser = build_parser(prog, commands)
    args = parser.parse_args(args_list)
    args.trusted_keys = None if trusted_keys is None else tuple(trusted_keys)
    args.serve_app = serve_app
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args))
    except LlamashipError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return int(error.exit_code)

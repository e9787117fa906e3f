"""The commands of `llamaship` and of the bundle's `backend` executable.

Their entry points live in `llamaship_backend.cli`, which passes in the HTTP app `serve` runs.
A bare `llamaship` prints its help; the bundle's `backend` has `serve` as its default command
(an app spawns it, and a double-click should start the server, not print help and exit).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Mapping, Sequence

from llamaship import __version__
from llamaship_contract.errors import LlamashipError
from llamaship_contract.names import ExitStatus

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
    "vulkan-devices": "llamaship.cli.vulkan_devices",
    "open": "llamaship.cli.open_page",
    "measure-variant": "llamaship.cli.measure_variant",
}
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
    default_command: str | None = None,
) -> int:
    """Run one command; a `LlamashipError` becomes one line on stderr and its exit status.

    `trusted_keys`: the release public keys overlays must be signed with (default: the keys
    bundled with the application); a caller of this API may pass others, a user cannot.
    `serve_app` is what `serve` runs; `extra_commands` (name -> module) adds the commands of a
    package above the runtime (the backend's), which the runtime must not import itself.
    `default_command` runs when none is named (the bundle's `backend`: `serve`); without one,
    naming no command prints the help.
    """
    commands = {**_COMMANDS, **(extra_commands or {})}
    args_list = list(sys.argv[1:] if argv is None else argv)
    if (
        default_command is not None
        and not any(arg in commands for arg in args_list)
        and not _NO_DEFAULT_COMMAND & set(args_list)
    ):
        args_list.insert(0, default_command)
    parser = build_parser(prog, commands)
    args = parser.parse_args(args_list)
    if args.command is None:
        if args_list:
            parser.error(f"name a command ({', '.join(commands)})")
        parser.print_help()
        return int(ExitStatus.OK)
    args.trusted_keys = None if trusted_keys is None else tuple(trusted_keys)
    args.serve_app = serve_app
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args))
    except LlamashipError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return int(error.exit_code)
    except KeyboardInterrupt:
        explain = getattr(module, "interrupted", None)
        what = explain(args, prog) if explain is not None else "stopped"
        print(f"\n{prog}: interrupted: {what}", file=sys.stderr)
        return int(ExitStatus.INTERRUPTED)

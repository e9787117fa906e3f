"""`llamaship serve`: boot (detect, decide, activate llama.cpp) and run the HTTP backend."""

from __future__ import annotations

import argparse
from pathlib import Path

from llamaship.cli.model_file import check_model
from llamaship.errors import ConfigError
from llamaship_contract.errors import LlamashipError
from llamaship_contract.names import ExitStatus


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the backend HTTP server (what the bundle's `backend` runs without a command)",
        description="Run the OpenAI-compatible llama.cpp backend. Options override "
        "LLAMASHIP_HOST, LLAMASHIP_PORT and LLAMASHIP_MODEL.",
    )
    parser.add_argument("--host", help="address to listen on (LLAMASHIP_HOST)")
    parser.add_argument("--port", help="TCP port, 0 for any free one (LLAMASHIP_PORT)")
    parser.add_argument("--model", help="GGUF model file to serve (LLAMASHIP_MODEL)")


_FLAGS = {"LLAMASHIP_HOST": "--host", "LLAMASHIP_PORT": "--port", "LLAMASHIP_MODEL": "--model"}


def check_flags(cli: dict[str, str | None]) -> None:
    """Refuse an invalid option value naming the flag the user typed, not the setting."""
    from llamaship.config.options import BY_KEY

    for key, value in cli.items():
        if value is None:
            continue
        try:
            BY_KEY[key].parse(value)
        except ValueError as accepted:
            msg = f"{key}={value!r} is invalid (from {_FLAGS[key]} {value!r}): expected {accepted}."
            raise ConfigError(msg) from None


class HostUnknown(LlamashipError):
    """The address to listen on is a host name that does not resolve."""

    exit_code = ExitStatus.BIND


def check_host(host: str) -> None:
    """Refuse a listening address that does not resolve (before booting, in one line)."""
    import socket

    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        msg = (
            f"the address to listen on, LLAMASHIP_HOST (or --host) {host!r}, does not resolve "
            f"({error}): use an IP address such as 127.0.0.1 or a host name this machine knows"
        )
        raise HostUnknown(msg) from None


def _from_llama_cpp(error: ImportError) -> bool:
    """Whether importing llama_cpp failed (not found, or its own import broke)."""
    import traceback

    if (error.name or "").split(".")[0] == "llama_cpp":
        return True
    frames = traceback.extract_tb(error.__traceback__)
    return any("llama_cpp" in Path(frame.filename).parts for frame in frames)


class LlamaCppMissing(LlamashipError):
    """llama-cpp-python (the CPU build every launch falls back to) cannot be imported."""

    exit_code = ExitStatus.ERROR

    def __init__(self, error: ImportError) -> None:
        super().__init__(
            f"llama-cpp-python cannot be imported ({error}): install it "
            "(`pip install llama-cpp-python`, see docs/install.md) or run the bundle's `backend`"
        )


def run(args: argparse.Namespace) -> int:
    from llamaship.config import executable_dir, load_settings
    from llamaship.launch import log as launch_log
    from llamaship.launch.bootstrap import boot
    from llamaship.launch.status import LaunchTracker, run_launch
    from llamaship.paths import DataDirs

    serve_app = args.serve_app
    if serve_app is None:
        msg = (
            "this program has no HTTP backend to serve: run `llamaship serve`, the bundle's "
            "`backend serve` or `python -m llamaship_backend serve`"
        )
        raise ConfigError(msg)
    cli = {"LLAMASHIP_HOST": args.host, "LLAMASHIP_PORT": args.port, "LLAMASHIP_MODEL": args.model}
    check_flags(cli)
    settings = load_settings(args.env_file, cli, bundle_dir=executable_dir())
    tracker = LaunchTracker(DataDirs(settings.home), log_file=launch_log.configure(settings.home))

    def boot_and_serve() -> int:
        check_host(settings.host)
        if settings.model is not None:
            check_model(settings.model)
        try:
            state = boot(settings, trusted_keys=args.trusted_keys, tracker=tracker)
        except ImportError as error:
            if not _from_llama_cpp(error):
                raise
            raise LlamaCppMissing(error) from None
        return int(serve_app(state, on_listening=tracker.serving))

    return run_launch(tracker, boot_and_serve)

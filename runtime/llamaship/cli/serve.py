"""`llamaship serve`: boot (detect, decide, activate llama.cpp) and run the HTTP backend."""

from __future__ import annotations

import argparse
from pathlib import Path

from llamaship.errors import ConfigError

GGUF_MAGIC = b"GGUF"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the backend HTTP server (the default command)",
        description="Run the OpenAI-compatible llama.cpp backend. Options override "
        "LLAMASHIP_HOST, LLAMASHIP_PORT and LLAMASHIP_MODEL.",
    )
    parser.add_argument("--host", help="address to listen on (LLAMASHIP_HOST)")
    parser.add_argument("--port", help="TCP port, 0 for any free one (LLAMASHIP_PORT)")
    parser.add_argument("--model", help="GGUF model file to serve (LLAMASHIP_MODEL)")


def check_model(model: Path | None) -> None:
    """Refuse a configured model that is missing or not a GGUF file (none configured is fine)."""
    if model is None:
        return
    try:
        with model.open("rb") as handle:
            magic = handle.read(len(GGUF_MAGIC))
    except OSError as error:
        msg = (
            f"LLAMASHIP_MODEL={str(model)!r} cannot be read ({error.strerror or error}): "
            "point it (or --model) at a .gguf model file, or leave it empty"
        )
        raise ConfigError(msg) from None
    if magic != GGUF_MAGIC:
        msg = (
            f"LLAMASHIP_MODEL={str(model)!r} is not a GGUF model file (it does not start "
            "with 'GGUF'): download the model in GGUF format, or leave it empty"
        )
        raise ConfigError(msg)


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
    settings = load_settings(args.env_file, cli, bundle_dir=executable_dir())
    check_model(settings.model)
    tracker = LaunchTracker(DataDirs(settings.home), log_file=launch_log.configure(settings.home))

    def boot_and_serve() -> int:
        state = boot(settings, trusted_keys=args.trusted_keys, tracker=tracker)
        return int(serve_app(state, on_listening=tracker.serving))

    return run_launch(tracker, boot_and_serve)

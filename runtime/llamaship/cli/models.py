"""`llamaship models list|pull|remove|use`: the models under LLAMASHIP_HOME/models."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llamaship.config import Settings
    from llamaship.io.transfer import ProgressFn
    from llamaship.models.store import ModelStore


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list, pull, remove or choose models",
        description="Models live under LLAMASHIP_HOME/models; the chosen one is saved in "
        "LLAMASHIP_HOME/settings.json (LLAMASHIP_MODEL and --model win over it).",
    )
    actions = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    actions.add_parser("list", help="show the catalogue and the installed models")
    pull = actions.add_parser(
        "pull",
        help="download a model from the catalogue or a URL",
        description="Download (resuming an interrupted download), check the sha256 and move "
        "the model into LLAMASHIP_HOME/models. Progress goes to stderr.",
    )
    pull.add_argument(
        "model",
        metavar="NAME|URL",
        help="a catalogue name (see `models list`) or an http(s) URL of a .gguf",
    )
    pull.add_argument("--sha256", metavar="HASH", help="the sha256 the file must have")
    pull.add_argument(
        "--accept-unverified",
        action="store_true",
        help="pull a model whose sha256 is unknown without checking it",
    )
    remove = actions.add_parser("remove", help="delete an installed model")
    remove.add_argument("model", metavar="NAME")
    use = actions.add_parser("use", help="serve this installed model from the next start")
    use.add_argument("model", metavar="NAME")


def _settings(args: argparse.Namespace) -> Settings:
    from llamaship.config import executable_dir, load_settings

    return load_settings(args.env_file, bundle_dir=executable_dir())


def _size(size: int | None) -> str:
    return "?" if size is None else f"{size / 2**20:.0f} MiB"


def _list(store: ModelStore) -> int:
    installed = {model.path.name: model for model in store.installed()}
    active = store.active()
    rows = [("NAME", "PURPOSE", "SIZE", "LICENSE", "STATUS")]
    for entry in store.catalogue.models:
        model = installed.pop(entry.file_name, None)
        status = [] if model is None else ["installed"]
        if entry.file_name == active:
            status.append("active")
        if entry.unverified:
            status.append("unverified")
        size = entry.size if model is None else model.size
        rows.append(
            (entry.name, entry.purpose, _size(size), entry.license, ", ".join(status) or "-")
        )
    for model in installed.values():
        state = "installed, active" if model.path.name == active else "installed"
        rows.append((model.name, "?", _size(model.size), "?", f"{state} (not in the catalogue)"))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
            + "  "
            + row[-1]
        )
    print(f"\nModels directory: {store.dir}")
    return 0


@contextmanager
def _progress_bar(name: str) -> Iterator[ProgressFn]:
    from tqdm import tqdm

    with tqdm(
        desc=name, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, disable=None
    ) as bar:

        def update(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        yield update


def _pull(store: ModelStore, args: argparse.Namespace) -> int:
    source = store.source(args.model, args.sha256, args.accept_unverified)
    with _progress_bar(source.name) as progress:
        model = store.pull(source, progress)
    print(f"{model.name} is installed: {model.path}")
    if store.active() is None:
        print(f"choose it with `llamaship models use {model.name}`")
    return 0


def _use(store: ModelStore, args: argparse.Namespace) -> int:
    model = store.use(args.model)
    print(f"{model.name} will be served from the next start ({model.path})")
    served = _settings(args).model
    if served is not None and served != model.path:
        print(
            f"note: LLAMASHIP_MODEL (.env, environment or --model) wins over this choice and "
            f"names {served}",
            file=sys.stderr,
        )
    return 0


def interrupted(args: argparse.Namespace, prog: str) -> str:
    """The line `main` prints when Ctrl-C stops this command."""
    if args.models_command != "pull":
        return "stopped"
    from llamaship.models.store import ModelStore

    return (
        f"the partial download is kept in {ModelStore(_settings(args).home).partial_dir}; run "
        f"`{prog} models pull {args.model}` again to resume it"
    )


def _remove(store: ModelStore, name: str) -> int:
    from llamaship.models.store import ModelNotInstalled
    from llamaship_contract.textsafe import printable

    installed = [model.name for model in store.installed()]
    if not any(name in (model.name, model.path.name) for model in store.installed()):
        msg = (
            f"the model '{printable(name, 100)}' is not installed, so there is nothing to "
            f"remove (installed: {', '.join(installed) or 'none'}; see `llamaship models list`)"
        )
        raise ModelNotInstalled(msg)
    model = store.remove(name)
    print(f"removed {model.name} ({model.path})")
    return 0


def run(args: argparse.Namespace) -> int:
    from llamaship.models.hub import Hub
    from llamaship.models.store import ModelStore

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request: noise here
    settings = _settings(args)
    store = ModelStore(settings.home, hub=Hub(settings.hub_url, settings.hub_allow_http))
    if args.models_command == "list":
        return _list(store)
    if args.models_command == "pull":
        return _pull(store, args)
    if args.models_command == "use":
        return _use(store, args)
    return _remove(store, args.model)

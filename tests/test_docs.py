"""The docs are true: every repository path, nox session, CLI command, setting and exit status
that README.md and docs/*.md name exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from llamaship.cli import build_parser
from llamaship.config import OPTIONS
from llamaship.config.options import BUILD_PREFIX, IGNORED_ENV, REMOVED
from llamaship_backend.cli import COMMANDS
from llamaship_contract.names import ExitStatus

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_CODE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
_NOX = re.compile(r"\bnox -s ([\w-]+)")
_COMMAND = re.compile(
    r"^(?:\$ )?(?:\S*/)?(?:llamaship|backend) ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?", re.M
)
_SETTING = re.compile(
    r"\b((?:LLAMASHIP|LLAMACPP|GPU_DETECTION)_[A-Z0-9_]*[A-Z0-9]|AUTO_UPGRADE_GPU)\b"
)
_EXIT = re.compile(r"exit (?:status|code) (\d+)")
_ERROR_EXIT = re.compile(r"`(\w+Error)`, exit (?:status|code) (\d+)")
_TABLE_ROW = re.compile(r"^\| (\d+) \| `([A-Z_]+)` \|", re.MULTILINE)
# Top-level folders and files whose paths the docs name (others are the user's: resources/).
_REPO_TOPS = {path.name for path in ROOT.iterdir() if not path.name.startswith(".git")}
# Made by a build or a run, not committed.
_BUILT = ("dist/", ".nox/", ".venv-tools/", "build/")


def _text(doc: Path) -> str:
    return doc.read_text(encoding="utf-8")


def _code_spans(doc: Path) -> list[str]:
    text = _text(doc)
    return _CODE.findall(_FENCE.sub("", text)) + _FENCE.findall(text)


def _named(pattern: re.Pattern[str]) -> list[tuple[str, str]]:
    return [
        (doc.name, match)
        for doc in DOCS
        for span in _code_spans(doc)
        for match in pattern.findall(span)
    ]


def _repo_path(token: str) -> str | None:
    """`token` as a repository path, when it looks like one (a known top folder, no spaces)."""
    token = token.strip().rstrip(".,:;")
    if " " in token or "://" in token or not re.fullmatch(r"[\w./*-]+", token):
        return None
    token = re.sub(r"\b[A-Z]{2,}\b", "*", token)  # placeholders: requirements/NAME.txt
    top = token.split("/", 1)[0]
    if "/" not in token and not (top in _REPO_TOPS and "." in top):
        return None
    if top not in _REPO_TOPS or token.startswith(_BUILT):
        return None
    return token


def test_named_repository_paths_exist() -> None:
    missing = []
    for doc in DOCS:
        tokens = [word for span in _code_spans(doc) for word in span.split()]
        for token in tokens:
            path = _repo_path(token)
            if path is not None and not any(ROOT.glob(path.rstrip("/"))):
                missing.append(f"{doc.name}: {path}")
        for link in _LINK.findall(_text(doc)):
            if "://" not in link and not (doc.parent / link).exists():
                missing.append(f"{doc.name}: link {link}")
    assert missing == []


def _nox_sessions() -> set[str]:
    sessions = set()
    for node in ast.parse((ROOT / "noxfile.py").read_text(encoding="utf-8")).body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            if isinstance(decorator, ast.Call) and ast.unparse(decorator.func) == "nox.session":
                names = [k.value for k in decorator.keywords if k.arg == "name"]
                sessions.add(ast.literal_eval(names[0]) if names else node.name)
    return sessions


def test_named_nox_sessions_exist() -> None:
    sessions = _nox_sessions()
    named = _named(_NOX)
    assert named, "no `nox -s` found: the pattern is stale"
    assert [f"{doc}: nox -s {name}" for doc, name in named if name not in sessions] == []


def _subcommands() -> dict[str, set[str]]:
    import argparse

    parser = build_parser("llamaship", {**dict(_cli_commands()), **COMMANDS})
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    found: dict[str, set[str]] = {}
    for name, sub in commands.choices.items():
        actions = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        found[name] = set(actions[0].choices) if actions else set()
    return found


def _cli_commands() -> dict[str, str]:
    from llamaship.cli import _COMMANDS

    return _COMMANDS


def test_named_cli_commands_exist() -> None:
    commands = _subcommands()
    wrong = []
    for doc, (command, action) in _named(_COMMAND):
        if command not in commands:
            wrong.append(f"{doc}: {command}")
        elif commands[command] and action and action not in commands[command]:
            wrong.append(f"{doc}: {command} {action}")
    assert wrong == []


def _build_names() -> set[str]:
    sources = [
        *(ROOT / "packaging").rglob("*.py"),
        ROOT / "noxfile.py",
        *(ROOT / "tests").glob("*.py"),
    ]
    return {
        name
        for source in sources
        for name in re.findall(rf"{BUILD_PREFIX}[A-Z0-9_]+", source.read_text(encoding="utf-8"))
    }


def test_named_settings_exist() -> None:
    known = {option.key for option in OPTIONS} | IGNORED_ENV
    known |= set(REMOVED) | _build_names()
    named = _named(_SETTING)
    assert named
    assert sorted({f"{doc}: {name}" for doc, name in named if name not in known}) == []


def _exit_code_of(error: str) -> int:
    """The exit status of the error class called `error` (found in the shipped packages)."""
    import importlib

    for top in ("runtime", "backend", "contract", "packaging"):
        for source in sorted((ROOT / top).rglob("*.py")):
            if f"class {error}(" in source.read_text(encoding="utf-8"):
                module = ".".join(source.relative_to(ROOT / top).with_suffix("").parts)
                return int(getattr(importlib.import_module(module), error).exit_code)
    raise AssertionError(f"no error class {error}")


def test_named_exit_statuses_exist() -> None:
    values = {int(status) for status in ExitStatus}
    wrong = [
        f"{doc.name}: exit status {number}"
        for doc in DOCS
        for number in _EXIT.findall(_text(doc))
        if int(number) not in values
    ]
    for doc in DOCS:
        for error, number in _ERROR_EXIT.findall(_text(doc)):
            if _exit_code_of(error) != int(number):
                wrong.append(f"{doc.name}: {error} exits {_exit_code_of(error)}, not {number}")
        for number, name in _TABLE_ROW.findall(_text(doc)):
            if name not in ExitStatus.__members__ or ExitStatus[name] != int(number):
                wrong.append(f"{doc.name}: | {number} | {name} |")
    assert wrong == []


GUIDES = ["README.md", "install.md", "upgrade.md", "electron.md"]


@pytest.mark.parametrize("name", GUIDES)
def test_guides_link_to_the_measured_sizes(name: str) -> None:
    """Sizes are measured once, in docs/benchmarks.md: a guide that gives one links to it
    (quoted messages, in backticks, are not measurements)."""
    doc = ROOT / name if name == "README.md" else ROOT / "docs" / name
    unlinked = [
        line
        for line in _text(doc).splitlines()
        if re.search(r"\b\d+(?:\.\d+)? ?(?:MB|GB)\b", _CODE.sub("", line))
        and "benchmarks.md" not in line
    ]
    assert unlinked == []

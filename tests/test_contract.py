"""The contract: declared once, exported as JSON Schema, and imported in one direction only."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from llamaship_contract import registry
from llamaship_contract.document import Document, dump_document, parse_document
from llamaship_contract.errors import ContractError

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {
    "llamaship_contract": ROOT / "contract" / "llamaship_contract",
    "llamaship": ROOT / "runtime" / "llamaship",
    "llamaship_backend": ROOT / "backend" / "llamaship_backend",
    "llamaship_build": ROOT / "packaging" / "llamaship_build",
}
# contract <- runtime (llamaship) <- backend, and contract <- build.
FORBIDDEN = {
    "llamaship_contract": {"llamaship", "llamaship_backend", "llamaship_build"},
    "llamaship": {"llamaship_backend", "llamaship_build"},
    "llamaship_backend": {"llamaship_build"},
    # The build side measures and exercises the runtime only through subprocesses.
    "llamaship_build": {"llamaship", "llamaship_backend"},
}


def _imports(path: Path) -> set[str]:
    """The top-level package of every absolute import in `path`, wherever it stands."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_dependencies_point_one_way(package: str) -> None:
    wrong = sorted(
        f"{path.relative_to(ROOT)} imports {name}"
        for path in PACKAGES[package].rglob("*.py")
        for name in _imports(path) & FORBIDDEN[package]
    )
    assert wrong == [], f"{package} must not import {sorted(FORBIDDEN[package])}"


def _module_file(module: str, packages: dict[str, Path]) -> Path | None:
    top, *rest = module.split(".")
    if top not in packages:
        return None
    base = packages[top].joinpath(*rest)
    return next((c for c in (base.with_suffix(".py"), base / "__init__.py") if c.is_file()), None)


def _contract_names(path: Path) -> set[str]:
    """The names `path` imports from the contract."""
    return {
        alias.asname or alias.name
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("llamaship_contract")
        for alias in node.names
    }


def _contract_names_imported_second_hand(files: list[Path], packages: dict[str, Path]) -> list[str]:
    """`file:line imports NAME from MODULE` wherever MODULE only passes on a contract name."""
    found = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module):
                continue
            source = _module_file(node.module, packages)
            if source is None or node.module.startswith("llamaship_contract"):
                continue
            found += [
                f"{path.name}:{node.lineno} imports {alias.name} from {node.module}"
                for alias in node.names
                if alias.name in _contract_names(source)
            ]
    return found


def test_contract_names_are_imported_from_the_contract() -> None:
    """No runtime, backend or build module passes on a contract name (a second name for it)."""
    files = [
        path for folder in (*PACKAGES.values(), ROOT / "tests") for path in folder.rglob("*.py")
    ]
    assert _contract_names_imported_second_hand(files, PACKAGES) == []


def test_a_contract_name_imported_second_hand_is_found(tmp_path: Path) -> None:
    package = tmp_path / "llamaship"
    package.mkdir()
    (package / "names.py").write_text("from llamaship_contract.names import ExitStatus\n")
    user = tmp_path / "user.py"
    user.write_text("from llamaship.names import ExitStatus\nfrom llamaship_contract import x\n")
    assert _contract_names_imported_second_hand([user], {"llamaship": package}) == [
        "user.py:1 imports ExitStatus from llamaship.names"
    ]


def test_the_runtime_and_the_build_side_share_the_contracts_root_error() -> None:
    from llamaship.errors import ConfigError
    from llamaship_build.errors import BuildError
    from llamaship_contract.errors import LlamashipError
    from llamaship_contract.signing import SignatureError

    assert issubclass(ConfigError, LlamashipError)
    assert issubclass(BuildError, LlamashipError) and issubclass(ContractError, LlamashipError)
    assert issubclass(SignatureError, LlamashipError)


def test_docs_schemas_are_current() -> None:
    stale = registry.stale_files(ROOT / "docs" / "schemas")
    assert stale == [], f"docs/schemas is stale ({stale}): run `nox -s schemas`"


def test_stale_files_notices_changes_and_leftovers(tmp_path: Path) -> None:
    written = registry.export(tmp_path)
    assert registry.stale_files(tmp_path) == []
    (tmp_path / written[0]).write_text("{}\n")
    (tmp_path / "gone.schema.json").write_text("{}\n")
    (tmp_path / written[1]).unlink()
    assert registry.stale_files(tmp_path) == sorted([written[0], written[1], "gone.schema.json"])


# The release index grows: a bundle must read the next format's documents, so these ignore
# fields they do not know (docs/release-index.md); every other document refuses them.
GROWING = {"release-index", "release-list"}


@pytest.mark.parametrize("name", sorted(set(registry.DOCUMENTS) - GROWING))
def test_every_document_refuses_unknown_fields_and_names_them(name: str) -> None:
    model = registry.DOCUMENTS[name]
    assert issubclass(model, Document)
    with pytest.raises(ContractError, match=r"surprise: Extra inputs are not permitted"):
        parse_document(model, {"surprise": 1}, f"a {name}")
    schema = json.loads(registry.schema_text(model))
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize("name", sorted(GROWING))
def test_the_release_index_documents_ignore_unknown_fields(name: str) -> None:
    model = registry.DOCUMENTS[name]
    with pytest.raises(ContractError) as raised:
        parse_document(model, {"surprise": 1}, f"a {name}")
    assert "surprise" not in str(raised.value) and "Field required" in str(raised.value)
    assert json.loads(registry.schema_text(model)).get("additionalProperties") is not False


def test_registered_names_cover_the_issue_list() -> None:
    """Layer manifest, release index, detection report, bundle manifest, capabilities reply,
    pointer and state files (probe and launch records are declared in launch.py)."""
    assert {
        "layer-manifest",
        "release-index",
        "detection-report",
        "bundle-manifest",
        "capabilities",
        "overlay-pointer",
        "quarantine",
        "accepted-serials",
        "detection-cache",
    } <= set(registry.DOCUMENTS)


def test_dumps_are_canonical() -> None:
    from llamaship_contract.state import AcceptedSerialsFile

    data = dump_document(AcceptedSerialsFile(index_serial=3, manifest_serial=2))
    assert data == b'{"index_serial":3,"manifest_serial":2,"schema":1}'

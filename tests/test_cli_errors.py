"""A user's mistake gets one line on stderr and exit status 2 from `python -m llamaship`,
never a traceback: bad `.env` files, a missing `--env-file`, a home that is a file, a port file
that is a directory, a model that is missing or not GGUF."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llamaship import __version__
from llamaship_backend.cli import main
from llamaship_contract.names import ExitStatus

_OURS = ("LLAMASHIP_", "LLAMACPP_", "GPU_DETECTION_", "AUTO_UPGRADE_GPU")


def run(
    home: Path, *args: str, cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith(_OURS)}
    environment.update({"LLAMASHIP_HOME": str(home), **env})
    return subprocess.run(
        [sys.executable, "-m", "llamaship_backend", *args],
        env=environment,
        cwd=cwd or home.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> str:
    assert result.returncode == ExitStatus.CONFIG, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def test_env_file_that_is_not_utf8(home: Path) -> None:
    (home / ".env").write_bytes(b"LLAMASHIP_PORT=1\n# caf\xe9\n")
    assert_one_line_error(run(home, "detect"), str(home / ".env"), "not UTF-8")


def test_env_file_that_cannot_be_read(home: Path) -> None:
    (home / ".env").mkdir()  # root reads any file: a directory is what stays unreadable
    assert_one_line_error(run(home, "overlay", "status"), str(home / ".env"), "cannot read")


def test_missing_env_file_option_before_and_after_the_command(home: Path) -> None:
    absent = home / "absent.env"
    assert_one_line_error(run(home, "--env-file", str(absent), "detect"), str(absent))
    assert_one_line_error(run(home, "serve", "--env-file", str(absent)), str(absent))
    assert_one_line_error(run(home, "overlay", "status", "--env-file", str(absent)), str(absent))


def test_home_that_is_a_file(tmp_path: Path) -> None:
    home_file = tmp_path / "home"
    home_file.write_text("not a directory\n")
    assert_one_line_error(run(home_file, "detect"), "LLAMASHIP_HOME", str(home_file))


def test_port_file_that_is_a_directory(home: Path) -> None:
    assert_one_line_error(
        run(home, "serve", LLAMASHIP_PORT_FILE=str(home)), "LLAMASHIP_PORT_FILE", str(home)
    )


def test_unknown_llamaship_variable_gets_a_suggestion(home: Path) -> None:
    assert_one_line_error(
        run(home, "detect", LLAMASHIP_MODLE="x.gguf"),
        "LLAMASHIP_MODLE",
        "Did you mean LLAMASHIP_MODEL?",
    )


def test_configured_model_that_is_missing(home: Path) -> None:
    missing = home / "missing.gguf"
    assert_one_line_error(run(home, "serve", "--model", str(missing)), str(missing))
    assert_one_line_error(run(home, "serve", LLAMASHIP_MODEL=str(missing)), "LLAMASHIP_MODEL")


def test_configured_model_that_is_not_gguf(home: Path) -> None:
    model = home / "model.gguf"
    model.write_text("<html>404 Not Found</html>\n")
    assert_one_line_error(
        run(home, "serve", LLAMASHIP_MODEL=str(model)), str(model), "not a GGUF model file"
    )


def test_env_file_after_the_command_is_read(home: Path, tmp_path: Path) -> None:
    env_file = tmp_path / "chosen.env"
    env_file.write_text("GPU_DETECTION_TIMEOUT=soon\n")
    line = assert_one_line_error(run(home, "detect", "--json", "--env-file", str(env_file)))
    assert "GPU_DETECTION_TIMEOUT='soon'" in line


def test_planted_env_in_the_working_directory_is_ignored(home: Path, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("GPU_DETECTION_TIMEOUT=soon\n")
    result = run(home, "overlay", "status", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("prog", ["llamaship", "backend"])
def test_version(prog: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"], prog=prog)
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"{prog} {__version__}"


def test_version_of_the_module_command(home: Path) -> None:
    result = run(home, "--version")
    assert (result.returncode, result.stdout.strip()) == (0, f"llamaship {__version__}")

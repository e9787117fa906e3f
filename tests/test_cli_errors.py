"""A user's mistake gets one line on stderr and exit status 2 from `python -m llamaship`,
never a traceback: bad `.env` files, a missing `--env-file`, a home that is a file, a port file
that is a directory, a model that is missing or not GGUF."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fixtures_release import CUDA13_DRIVER, RTX_2080
from hardware.fakes import FakeHardware, llamaship_command
from llamaship import __version__
from llamaship_backend.cli import main
from llamaship_contract.names import ExitStatus
from models_kit import ModelServer
from overlay_kit.releases import LLAMA_CPP_VERSION, Keys, ReleaseFactory, ReleaseSpec
from overlay_kit.server import OverlayServer, serving

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


# -- The first run as users meet it (issue 15): every way it can fail is one line ----------------


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    """The error line: the last line of stderr (a launch logs its progress above it)."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines, result.stderr
    assert sum("error:" in line for line in lines) == 1, result.stderr
    return lines[-1]


def broken_llama_cpp(tmp_path: Path) -> dict[str, str]:
    """A PYTHONPATH on which `import llama_cpp` fails as a broken install does."""
    package = tmp_path / "broken-site" / "llama_cpp"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        'raise ImportError("libllama.so: cannot open shared object file")\n'
    )
    return {"PYTHONPATH": os.pathsep.join([str(package.parent), *sys.path])}


def test_serve_without_llama_cpp_is_one_line_logged_and_shown_by_status(
    home: Path, tmp_path: Path
) -> None:
    result = run(home, "serve", **broken_llama_cpp(tmp_path))
    assert result.returncode == ExitStatus.ERROR, result.stderr
    line = last_line(result)
    assert line.startswith("llamaship: error: llama-cpp-python cannot be imported"), line
    assert "libllama.so" in line
    log = (home / "logs" / "llamaship.log").read_text(encoding="utf-8").splitlines()
    assert "llama-cpp-python cannot be imported" in log[-1], log[-3:]
    status = run(home, "status")
    assert status.returncode == 0, status.stderr
    assert "health:       failed: llama-cpp-python cannot be imported" in status.stdout
    assert "without a crash" not in status.stdout


def test_a_launch_that_fails_on_its_model_is_logged_and_shown_by_status(home: Path) -> None:
    model = home / "page.gguf"
    model.write_text("<html>404</html>\n")
    result = run(home, "serve", "--model", str(model))
    line = assert_one_line_error(result, str(model), "not a GGUF model file")
    log = (home / "logs" / "llamaship.log").read_text(encoding="utf-8").splitlines()
    assert log[-1].endswith(line.removeprefix("llamaship: error: ")), log[-2:]
    status = run(home, "status", "--json")
    launch = json.loads(status.stdout)["launch"]
    assert launch["process"]["phase"] == "ended"
    assert launch["error"] == line.removeprefix("llamaship: error: ")


@pytest.mark.parametrize(
    "command",
    [
        ["serve"],
        ["detect"],
        ["status"],
        ["fit", "--model", "x.gguf"],
        ["models", "list"],
        ["overlay", "status"],
        ["overlay", "install", "https://example.org/releases.json"],
    ],
    ids=lambda command: "-".join(command[:2]),
)
def test_home_under_a_regular_file(tmp_path: Path, command: list[str]) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file\n")
    home = blocker / "home"
    result = run(home, *command, cwd=tmp_path)
    assert_one_line_error(result, "LLAMASHIP_HOME", f"{str(blocker)!r}")
    assert blocker.read_text() == "a file\n"


def test_build_variables_do_not_stop_runtime_commands(home: Path) -> None:
    build = {
        "LLAMASHIP_BUILD_LINUX_TOOLCHAIN": "manylinux",
        "LLAMASHIP_BUILD_GLIBC_FLOOR": "2.31",
        "LLAMASHIP_BUILD_CUDA_FIXTURE": "/nonexistent.whl",
        "LLAMASHIP_BUILD_ROOT": str(home),
    }
    result = run(home, "overlay", "status", **build)
    assert result.returncode == 0, result.stderr


def test_typo_of_an_unprefixed_setting_in_a_env_file_is_refused(home: Path) -> None:
    (home / ".env").write_text("AUTO_UPGRAD_GPU=true\n")
    assert_one_line_error(
        run(home, "overlay", "status"), "AUTO_UPGRAD_GPU", "Did you mean AUTO_UPGRADE_GPU?"
    )


def test_typo_of_an_unprefixed_setting_in_the_environment_is_a_warning(home: Path) -> None:
    result = run(home, "overlay", "status", AUTO_UPGRAD_GPU="true")
    assert result.returncode == 0, result.stderr
    assert "AUTO_UPGRAD_GPU" in result.stderr and "AUTO_UPGRADE_GPU" in result.stderr
    assert "Traceback" not in result.stderr


def test_other_programs_variables_are_not_typos(home: Path) -> None:
    result = run(home, "overlay", "status", AUTO_UPGRADE_APT="true", GPU_COUNT="2")
    assert (result.returncode, result.stderr) == (0, "")


def test_a_host_that_does_not_resolve_is_not_a_busy_port(home: Path) -> None:
    result = run(home, "serve", "--host", "no-such-host.invalid")
    assert result.returncode == ExitStatus.BIND, result.stderr
    line = last_line(result)
    assert "does not resolve" in line and "no-such-host.invalid" in line
    assert "port" not in line


def test_an_invalid_port_option_names_the_flag(home: Path) -> None:
    line = assert_one_line_error(run(home, "serve", "--port", "abc"), "from --port 'abc'")
    assert "0 to 65535" in line


@pytest.mark.parametrize("kind", ["missing", "directory-without-index"])
def test_a_release_path_that_does_not_exist_is_a_usage_error(
    home: Path, tmp_path: Path, kind: str
) -> None:
    release = tmp_path / "release"
    if kind != "missing":
        release.mkdir()
    args = ("overlay", "install", str(release), "--llama-cpp-version", "0.3.16")
    line = assert_one_line_error(run(home, *args), str(release))
    assert "rejected" not in line


def test_removing_a_model_that_is_not_installed_says_so(home: Path) -> None:
    result = run(home, "models", "remove", "qwen3-0.6b")
    assert result.returncode == ExitStatus.CONFIG, result.stderr
    line = last_line(result)
    assert "'qwen3-0.6b' is not installed" in line and "nothing to remove" in line


def test_a_bare_llamaship_prints_help_instead_of_serving(home: Path) -> None:
    result = run(home)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: llamaship") and "serve" in result.stdout
    assert not (home / "state").exists()  # no launch happened


def test_the_bundle_backend_still_serves_without_arguments(home: Path) -> None:
    script = "import sys; from llamaship_backend.cli import backend_main; sys.exit(backend_main())"
    environment = {key: value for key, value in os.environ.items() if not key.startswith(_OURS)}
    result = subprocess.run(
        [sys.executable, "-c", script, "--port", "abc"],
        env={**environment, "LLAMASHIP_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert_one_line_error(result, "backend: error:", "--port 'abc'")  # it ran `serve`


# -- fit and serve agree on which model files are usable -----------------------------------------


def _gguf(header: bytes, *records: bytes) -> bytes:
    return b"GGUF" + header + b"".join(records)


def _text(value: str) -> bytes:
    data = value.encode()
    return struct.pack("<Q", len(data)) + data


def bad_model(path: Path, kind: str) -> Path:
    """A model file that neither `fit` nor `serve` may accept."""
    if kind == "not-gguf":
        path.write_text("<html>404 Not Found</html>\n")
    elif kind == "too-old":
        path.write_bytes(_gguf(bytes(60)))
    elif kind == "truncated":
        field = _text("general.name") + struct.pack("<I", 8) + _text("a model")
        path.write_bytes(_gguf(struct.pack("<IQQ", 3, 0, 1), field)[:-3])
    elif kind == "absurd-counts":
        path.write_bytes(_gguf(struct.pack("<IQQ", 3, 2**62, 2**62)))
    elif kind == "absurd-string":
        path.write_bytes(_gguf(struct.pack("<IQQ", 3, 0, 1), struct.pack("<Q", 2**60)))
    elif kind == "absurd-tensors":
        tensor = _text("blk.0.weight") + struct.pack("<IQQIQ", 2, 2**20, 2**20, 0, 0)
        path.write_bytes(_gguf(struct.pack("<IQQ", 3, 1, 0), tensor))
    return path


BAD_MODELS = [
    "missing",
    "not-gguf",
    "too-old",
    "truncated",
    "absurd-counts",
    "absurd-string",
    "absurd-tensors",
]


@pytest.mark.parametrize("kind", BAD_MODELS)
@pytest.mark.parametrize("command", ["fit", "serve"])
def test_fit_and_serve_refuse_the_same_model_files(home: Path, command: str, kind: str) -> None:
    model = bad_model(home / f"{kind}.gguf", kind)
    line = assert_one_line_error(run(home, command, "--model", str(model)), str(model))
    assert "every layer" not in line


def test_fit_plans_what_serve_runs_on_a_gpu_without_an_overlay(hardware: FakeHardware) -> None:
    """A GPU but no overlay active: serve runs the CPU build, so fit plans for it."""
    hardware.gpus = [RTX_2080]
    hardware.driver_version = CUDA13_DRIVER
    hardware.cuda_version = 13000
    hardware.install_nvml()
    model = hardware.root / "empty.gguf"
    model.write_bytes(_gguf(struct.pack("<IQQ", 3, 0, 0)))
    result = subprocess.run(
        [*llamaship_command(), "fit", "--model", str(model), "--json"],
        env=hardware.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert (plan["source"], plan["n_gpu_layers"]) == ("cpu", 0), plan


# -- Ctrl-C during a download: one line, the partial download kept, exit status 130 -------------


def interrupted(command: list[str], env: dict[str, str], partial_dir: Path) -> str:
    """Run `command`, press Ctrl-C once part of the download is on disk; the error line."""
    with subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            while process.poll() is None and not any(
                path.stat().st_size > 0 for path in partial_dir.glob("*.part")
            ):
                time.sleep(0.05)
            assert process.poll() is None, "the download ended before it was interrupted"
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=60)
        finally:
            process.kill()
    assert process.returncode == ExitStatus.INTERRUPTED, stderr
    assert "Traceback" not in stderr, stderr
    assert list(partial_dir.glob("*.part")), "the partial download was not kept"
    return stderr.strip().splitlines()[-1]


def test_ctrl_c_during_models_pull_keeps_the_partial_download(home: Path, tmp_path: Path) -> None:
    root = tmp_path / "www"
    root.mkdir()
    model = b"GGUF" + struct.pack("<IQQ", 3, 0, 0) + os.urandom(1 << 20)
    (root / "slow.gguf").write_bytes(model)
    environment = {key: value for key, value in os.environ.items() if not key.startswith(_OURS)}
    environment["LLAMASHIP_HOME"] = str(home)
    with serving(ModelServer(root), "model-server") as server:
        server.inject("slow.gguf", "slow", "slow")  # the HEAD and GET of the first pull only
        url = f"{server.url}slow.gguf"
        command = [sys.executable, "-m", "llamaship_backend", "models", "pull", url]
        command += ["--sha256", hashlib.sha256(model).hexdigest()]
        line = interrupted(command, environment, home / "models" / ".partial")
        assert "partial download is kept" in line and f"llamaship models pull {url}" in line
        resumed = subprocess.run(
            command, env=environment, capture_output=True, text=True, timeout=120, check=False
        )
        assert resumed.returncode == 0, resumed.stderr
        assert (home / "models" / "slow.gguf").read_bytes() == model
        assert server.requests[-1].range is not None, server.requests  # it resumed


def test_ctrl_c_during_overlay_install_keeps_the_partial_download(
    hardware: FakeHardware,
    releases: ReleaseFactory,
    release_keys: Keys,
    overlay_server: OverlayServer,
) -> None:
    hardware.gpus = [RTX_2080]
    hardware.driver_version = CUDA13_DRIVER
    hardware.cuda_version = 13000
    hardware.install_nvml()
    index = releases.publish(overlay_server.root, ReleaseSpec())
    archives = [path.name for path in overlay_server.root.glob("*.tar.zst")]
    for name in archives:
        overlay_server.inject(name, "slow", forever=True)
    url = f"{overlay_server.url}{index.name}"
    command = [*llamaship_command(release_keys.public), "overlay", "install", url]
    line = interrupted(
        [*command, "--llama-cpp-version", LLAMA_CPP_VERSION],
        hardware.env(),
        hardware.home / "downloads",
    )
    assert "partial download is kept" in line and f"overlay install {url}" in line, line


def test_a_model_hash_mismatch_does_not_blame_a_signed_manifest(home: Path, tmp_path: Path) -> None:
    root = tmp_path / "www"
    root.mkdir()
    (root / "model.gguf").write_bytes(b"GGUF" + bytes(1024))
    with serving(ModelServer(root), "model-server") as server:
        result = run(home, "models", "pull", f"{server.url}model.gguf", "--sha256", "0" * 64)
    assert result.returncode == ExitStatus.INTEGRITY, result.stderr
    line = last_line(result)
    assert "sha256" in line and "0" * 64 in line and "manifest" not in line, line

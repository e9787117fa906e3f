"""The configuration resolver: precedence, validation messages, unknown keys, .env.example."""

from pathlib import Path

import pytest

from llamaship.config import OPTIONS, load_settings, render_env_example, resolve_settings
from llamaship.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_precedence_defaults_env_file_environment_cli(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("LLAMACPP_N_THREADS=3\nGPU_DETECTION_TIMEOUT=7\nLLAMASHIP_PORT=1111\n")
    settings = resolve_settings(
        env={
            "LLAMASHIP_HOME": str(tmp_path),
            "GPU_DETECTION_TIMEOUT": "2.5",
            "LLAMASHIP_PORT": "2222",
        },
        cli={"LLAMASHIP_PORT": "3333", "LLAMASHIP_MODEL": None},
        env_file=env_file,
    )
    assert settings.n_threads == 3  # .env over default
    assert settings.detection_timeout == 2.5  # environment over .env
    assert settings.port == 3333  # command line over environment
    assert settings.model is None  # an unset CLI option changes nothing
    assert settings.detection_cache is True  # default
    assert settings.n_gpu_layers is None  # "auto"


@pytest.mark.parametrize(
    ("key", "value", "accepted"),
    [
        ("GPU_DETECTION_TIMEOUT", "abc", "a number of seconds"),
        ("LLAMACPP_N_GPU_LAYERS", "-3", "-1 (all layers)"),
        ("LLAMACPP_N_THREADS", "0", "'auto' or a whole number >= 1"),
        ("AUTO_UPGRADE_GPU", "maybe", "true/false"),
        ("LLAMASHIP_PORT", "70000", "TCP port"),
    ],
)
def test_bad_values_name_the_variable_and_what_it_accepts(
    key: str, value: str, accepted: str
) -> None:
    with pytest.raises(ConfigError) as error:
        resolve_settings(env={"LLAMASHIP_HOME": "/tmp/x", key: value})
    assert f"{key}={value!r}" in str(error.value)
    assert accepted in str(error.value)


def test_every_bad_value_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as error:
        resolve_settings(env={"GPU_DETECTION_TIMEOUT": "abc", "LLAMACPP_N_GPU_LAYERS": "-3"})
    assert "GPU_DETECTION_TIMEOUT" in str(error.value)
    assert "LLAMACPP_N_GPU_LAYERS" in str(error.value)


def test_unknown_keys_are_refused_with_a_suggestion(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("LLAMACPP_N_THREAD=2\n")
    with pytest.raises(ConfigError, match="Did you mean LLAMACPP_N_THREADS"):
        resolve_settings(env={}, env_file=env_file)
    with pytest.raises(ConfigError, match="Did you mean LLAMASHIP_MODEL"):
        resolve_settings(env={"LLAMASHIP_MODLE": "x.gguf"})


def test_unrelated_environment_variables_are_ignored() -> None:
    settings = resolve_settings(env={"HOME": "/root", "PATH": "/usr/bin", "LLAMASHIP_HOME": "/d"})
    assert settings.home == Path("/d")


def test_env_example_lists_every_option_with_its_default() -> None:
    text = (ROOT / ".env.example").read_text()
    assert text == render_env_example()
    for option in OPTIONS:
        assert f"\n{option.key}=" in text


# -- where the .env comes from ------------------------------------------------------------


def test_env_file_in_the_working_directory_is_never_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("LLAMASHIP_PORT=1111\n")
    settings = load_settings(env={"LLAMASHIP_HOME": str(tmp_path / "home")})
    assert settings.port == 8765


def test_env_files_beside_the_bundle_then_in_home(tmp_path: Path) -> None:
    bundle, home = tmp_path / "bundle", tmp_path / "home"
    bundle.mkdir()
    home.mkdir()
    (bundle / ".env").write_text(
        f"LLAMASHIP_HOME={home}\nLLAMASHIP_PORT=1111\nLLAMASHIP_N_CTX=512\n"
    )
    (home / ".env").write_text("LLAMASHIP_PORT=2222\n")
    settings = load_settings(env={}, bundle_dir=bundle)
    assert (settings.home, settings.port, settings.n_ctx) == (home, 2222, 512)
    assert load_settings(env={"LLAMASHIP_PORT": "3333"}, bundle_dir=bundle).port == 3333


def test_explicit_env_file_wins_over_the_default_locations(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".env").write_text("LLAMASHIP_PORT=2222\n")
    explicit = tmp_path / "chosen.env"
    explicit.write_text("LLAMASHIP_N_CTX=99\n")
    env = {"LLAMASHIP_HOME": str(home)}
    settings = load_settings(explicit, env=env)
    assert (settings.port, settings.n_ctx) == (8765, 99)
    assert load_settings(env={**env, "LLAMASHIP_ENV_FILE": str(explicit)}).n_ctx == 99


def test_a_home_env_file_cannot_move_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".env").write_text(f"LLAMASHIP_HOME={tmp_path / 'elsewhere'}\n")
    with pytest.raises(ConfigError, match="cannot move it"):
        load_settings(env={"LLAMASHIP_HOME": str(home)})


def test_other_programs_keys_in_a_env_file_are_accepted(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("OPENAI_API_KEY=sk-123\nDATABASE_URL=postgres://x\nLLAMASHIP_PORT=1\n")
    assert resolve_settings(env={}, env_file=env_file).port == 1


@pytest.mark.parametrize(
    ("line", "hint"),
    [
        ("LLAMASHIP_PROT=1", "Did you mean LLAMASHIP_PORT"),
        ("LLAMACPP_N_THREAD=2", "Did you mean LLAMACPP_N_THREADS"),
        ("LLAMASHIP_TRUSTED_KEYS=abc", "come only from the application bundle"),
    ],
)
def test_unknown_llamaship_keys_in_a_env_file_are_refused(
    tmp_path: Path, line: str, hint: str
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f"OPENAI_API_KEY=sk-123\n{line}\n")
    with pytest.raises(ConfigError, match=hint) as error:
        resolve_settings(env={}, env_file=env_file)
    assert str(env_file) in str(error.value)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"LLAMASHIP_PORT=1\n\xff\xfe\n", "is not UTF-8 text"),
        (None, "cannot read the .env file"),  # a directory where the file should be
    ],
)
def test_an_unreadable_env_file_is_named(
    tmp_path: Path, content: bytes | None, problem: str
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    if content is None:
        (home / ".env").mkdir()
    else:
        (home / ".env").write_bytes(content)
    with pytest.raises(ConfigError, match=problem) as error:
        load_settings(env={"LLAMASHIP_HOME": str(home)})
    assert str(home / ".env") in str(error.value)


def test_a_missing_explicit_env_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as error:
        load_settings(tmp_path / "absent.env", env={"LLAMASHIP_HOME": str(tmp_path)})
    assert "absent.env" in str(error.value)


def test_home_that_is_a_file_and_port_file_that_is_a_directory(tmp_path: Path) -> None:
    home_file = tmp_path / "home-file"
    home_file.write_text("")
    with pytest.raises(ConfigError, match=r"LLAMASHIP_HOME=.* is a file"):
        load_settings(env={"LLAMASHIP_HOME": str(home_file)})
    with pytest.raises(ConfigError, match=r"LLAMASHIP_PORT_FILE=.* is a directory"):
        resolve_settings(
            env={"LLAMASHIP_HOME": str(tmp_path), "LLAMASHIP_PORT_FILE": str(tmp_path)}
        )
    with pytest.raises(ConfigError, match=r"LLAMASHIP_PORT_FILE=.* is inside a file"):
        resolve_settings(
            env={"LLAMASHIP_HOME": str(tmp_path), "LLAMASHIP_PORT_FILE": str(home_file / "port")}
        )


def test_the_build_namespace_is_not_configuration(tmp_path: Path) -> None:
    env = {
        "LLAMASHIP_HOME": str(tmp_path),
        "LLAMASHIP_BUILD_LINUX_TOOLCHAIN": "host",
        "LLAMASHIP_BUILD_NEW_KNOB": "anything",
        "LLAMASHIP_SIGNING_KEY": "secret",
        # what a launch recorded in the environment its children (probe, measurement) inherit
        "LLAMASHIP_LAUNCH_SET": '{"GGML_BACKEND_PATH": null}',
    }
    assert resolve_settings(env=env).home == tmp_path
    with pytest.raises(ConfigError, match="LLAMASHIP_LINUX_TOOLCHAIN"):  # the old name
        resolve_settings(env={"LLAMASHIP_LINUX_TOOLCHAIN": "host"})


@pytest.mark.parametrize("typo", ["AUTO_UPGRAD_GPU", "AUTO_UPGRADE_GPUS", "AUTOUPGRADE_GPU"])
def test_a_typo_of_an_unprefixed_key_is_refused_in_a_env_file(tmp_path: Path, typo: str) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f"{typo}=true\n")
    with pytest.raises(ConfigError, match=f"{typo} in .*Did you mean AUTO_UPGRADE_GPU"):
        resolve_settings(env={}, env_file=env_file)


def test_a_typo_of_an_unprefixed_key_in_the_environment_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = resolve_settings(env={"LLAMASHIP_HOME": str(tmp_path), "AUTO_UPGRAD_GPU": "1"})
    assert settings.auto_upgrade_gpu is False  # ignored, not read
    assert "AUTO_UPGRAD_GPU" in caplog.text and "AUTO_UPGRADE_GPU" in caplog.text


def test_a_home_inside_a_file_is_refused_without_creating_anything(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match=r"is inside .*which is a file"):
        resolve_settings(env={"LLAMASHIP_HOME": str(blocker / "a" / "b")})
    assert blocker.read_text() == "x"

"""The configuration resolver: precedence, validation messages, unknown keys, .env.example."""

from pathlib import Path

import pytest

from llamaship.config import OPTIONS, render_env_example, resolve_settings
from llamaship.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_precedence_defaults_env_file_environment_cli(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("LLAMACPP_N_THREADS=3\nGPU_DETECTION_TIMEOUT=7\nLLAMASHIP_PORT=1111\n")
    settings = resolve_settings(
        env={"LLAMASHIP_HOME": str(tmp_path), "GPU_DETECTION_TIMEOUT": "2.5",
             "LLAMASHIP_PORT": "2222"},
        cli={"LLAMASHIP_PORT": "3333", "LLAMASHIP_MODEL": None},
        env_file=env_file)
    assert settings.n_threads == 3            # .env over default
    assert settings.detection_timeout == 2.5  # environment over .env
    assert settings.port == 3333              # command line over environment
    assert settings.model is None             # an unset CLI option changes nothing
    assert settings.detection_cache is True   # default
    assert settings.n_gpu_layers is None      # "auto"


@pytest.mark.parametrize(("key", "value", "accepted"), [
    ("GPU_DETECTION_TIMEOUT", "abc", "a number of seconds"),
    ("LLAMACPP_N_GPU_LAYERS", "-3", "-1 (all layers)"),
    ("LLAMACPP_N_THREADS", "0", "'auto' or a whole number >= 1"),
    ("AUTO_UPGRADE_GPU", "maybe", "true/false"),
    ("LLAMASHIP_PORT", "70000", "TCP port"),
])
def test_bad_values_name_the_variable_and_what_it_accepts(key: str, value: str,
                                                          accepted: str) -> None:
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

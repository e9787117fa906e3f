"""The bench's runtime steps run as `scripts/bench_runtime.py`, never as program text."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from llamaship_build import bench_fit, bench_overlay, fit_accuracy
from llamaship_build.bench_probe import SCRIPT, probe_command, run_probe
from llamaship_build.errors import BuildError
from llamaship_build.llama_wheel import pinned_version
from llamaship_build.project import Project

ROOT = Path(__file__).resolve().parents[1]
PYTHON = Path(sys.executable)


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_runtime", ROOT / SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_command_the_build_runs_is_one_the_script_accepts(tmp_path: Path) -> None:
    commands = {
        "install": bench_overlay.install_command(
            PYTHON, tmp_path / "home", tmp_path / "releases.json", "PUBLIC", "1.2.3"
        ),
        "activate": bench_overlay.activate_command(PYTHON, "/module.so", "/runtime"),
        "cache-hit": bench_fit.cache_hit_command(PYTHON, tmp_path, tmp_path / "m.gguf", 7, "1.2.3"),
        "load": fit_accuracy.load_command(PYTHON, tmp_path / "m.gguf", 2048),
    }
    parser = _script().build_parser()
    for step, command in commands.items():
        assert command[:3] == [str(PYTHON), str(ROOT / SCRIPT), step]
        assert "-c" not in command
        args = parser.parse_args(command[2:])
        assert args.command == step
    install = parser.parse_args(commands["install"][2:])
    assert install.llama_cpp_version == "1.2.3"
    assert install.public_key == "PUBLIC"
    assert '"source":"nvml"' in install.machine.replace(" ", "")
    assert parser.parse_args(commands["cache-hit"][2:]).runs == 7
    assert parser.parse_args(commands["load"][2:]).n_ctx == 2048


def test_a_fit_cache_hit_is_timed_in_the_interpreter_under_test() -> None:
    version = pinned_version(Project.here().requirements)
    first, median, p95 = bench_fit.cache_hit_ms(PYTHON, version, runs=5)
    assert first > 0
    assert median > 0
    assert p95 > 0


def test_a_failing_step_is_one_build_error_with_its_stderr(tmp_path: Path) -> None:
    command = bench_overlay.activate_command(PYTHON, str(tmp_path / "no"), str(tmp_path / "no"))
    with pytest.raises(BuildError, match=r"the overlay benchmark failed \(exit [1-9]"):
        run_probe(command, bench_overlay.FAILURE)


def test_a_command_line_names_the_checkout_it_was_given(tmp_path: Path) -> None:
    command = probe_command(PYTHON, "activate", "a", "b", root=tmp_path)
    assert command == [str(PYTHON), str(tmp_path / SCRIPT), "activate", "a", "b"]


def test_the_llama_cpp_version_comes_from_the_lock(tmp_path: Path) -> None:
    (tmp_path / "cpu.txt").write_text(
        "llama-cpp-python==9.8.7 \\\n    --hash=sha256:" + "ab" * 32 + "\n"
    )
    assert pinned_version(tmp_path) == "9.8.7"

"""The layered, hash-locked requirements: fresh, layered, and the stale check names the file."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from llamaship_build import locks

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "requirements"


def test_locks_are_fresh_and_layered() -> None:
    assert locks.check_all(REQUIREMENTS) == []


def test_every_pin_is_hashed_and_headers_name_the_command() -> None:
    for name in locks.LOCK_NAMES:
        text = (REQUIREMENTS / f"{name}.txt").read_text()
        assert "#    nox -s lock" in text, name
        for block in re.split(r"\n(?=\S)", text):
            if "==" in block.split("\n")[0] and not block.startswith("#"):
                assert "--hash=sha256:" in block, f"{name}.txt: {block.splitlines()[0]}"


def test_cpu_and_gpu_share_base_pins_and_llama_version() -> None:
    base = locks.pins(REQUIREMENTS / "base.txt")
    cpu, gpu = locks.pins(REQUIREMENTS / "cpu.txt"), locks.pins(REQUIREMENTS / "gpu.txt")
    assert cpu["llama-cpp-python"] == gpu["llama-cpp-python"]
    for package in ("numpy", "jinja2", "diskcache"):
        assert cpu[package] == gpu[package] == base[package]


def _copy_checkout(tmp_path: Path) -> Path:
    shutil.copytree(REQUIREMENTS, tmp_path / "requirements")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llamaship_build", "lock", "--check"],
                          env={**os.environ, "LLAMASHIP_ROOT": str(root)},
                          capture_output=True, text=True, check=False)


def test_check_passes_on_an_unchanged_copy(tmp_path: Path) -> None:
    result = _check(_copy_checkout(tmp_path))
    assert result.returncode == 0, result.stderr


def test_check_names_the_stale_lock_when_an_in_file_changed(tmp_path: Path) -> None:
    root = _copy_checkout(tmp_path)
    with open(root / "requirements" / "cpu.in", "a") as source:
        source.write("rich\n")
    result = _check(root)
    assert result.returncode != 0
    assert "cpu.txt is stale" in result.stderr
    assert "gpu.txt" not in result.stderr
    assert "nox -s lock" in result.stderr


def test_a_changed_base_lock_makes_its_dependents_stale(tmp_path: Path) -> None:
    root = _copy_checkout(tmp_path)
    base = root / "requirements" / "base.txt"
    base.write_text(base.read_text().replace("numpy==", "numpy===", 1))
    problems = locks.check_all(root / "requirements")
    stale = {problem.split(" is stale")[0].rsplit("/", 1)[-1] for problem in problems}
    assert {"cpu.txt", "gpu.txt", "build.txt", "dev.txt", "tools.txt"} <= stale


def test_without_package_drops_only_that_entry() -> None:
    text = locks.without_package(REQUIREMENTS / "cpu.txt", "llama-cpp-python")
    assert "llama-cpp-python==" not in text
    assert "numpy==" in text

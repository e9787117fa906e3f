"""`nox -s bundle`: the CPU-only PyInstaller onedir bundle of the backend, plus its archive.

Steps: fresh locks -> portable llama.cpp wheel (wheelhouse) -> the project's own wheel ->
an isolated build venv from the locks -> PyInstaller -> library copies turned into links ->
`dist/backend/`, `dist/backend-<version>-<platform>-cpu.tar.gz` (+ .sha256),
`dist/bundle-manifest.json`. Skipped when nothing that goes into it changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from llamaship.overlay.download import sha256_of

from llamaship_build import locks, platforms
from llamaship_build.archive import make_archive
from llamaship_build.dedupe import link_duplicates
from llamaship_build.errors import BuildError
from llamaship_build.inventory import inventory
from llamaship_build.llama_wheel import PORTABLE, Pin, ensure_wheel
from llamaship_build.project import Project, cache_dir
from llamaship_build.spec import write_spec
from llamaship_build.strip import strip_binaries

_log = logging.getLogger(__name__)

MANIFEST_NAME = "bundle-manifest.json"
# Everything that changes the bundle; a change anywhere here means a rebuild.
_INPUTS = ("runtime", "backend", "packaging", "templates", "requirements",
           "pyproject.toml")


def input_key(project: Project, llama_wheel: Path) -> str:
    digest = hashlib.sha256()
    for relative in _INPUTS:
        top = project.root / relative
        files = [top] if top.is_file() else sorted(
            path for path in top.rglob("*")
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc")
        for path in files:
            digest.update(path.relative_to(project.root).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    digest.update(sha256_of(llama_wheel).encode())
    digest.update(sys.version.encode())
    return digest.hexdigest()


def _run(command: list[str], what: str, cwd: Path | None = None) -> None:
    _log.info("%s: %s", what, " ".join(command))
    result = subprocess.run(command, cwd=cwd, check=False)
    if result.returncode != 0:
        msg = f"{what} failed (exit {result.returncode}); see the output above"
        raise BuildError(msg)


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def build_venv(project: Project, llama_wheel: Path, purpose: str = "bundle",
               lock_names: tuple[str, ...] = ("base", "build")) -> Path:
    """An isolated venv from the locks plus the llama wheel; cached by their hashes."""
    material = b"".join((project.requirements / f"{name}.txt").read_bytes()
                        for name in (*lock_names, "cpu"))
    key = hashlib.sha256(material + sha256_of(llama_wheel).encode()).hexdigest()[:16]
    venv = cache_dir() / "venvs" / f"{purpose}-{key}"
    if venv_python(venv).exists():
        return venv
    staging = venv.with_name(venv.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    _run([sys.executable, "-m", "venv", str(staging)], f"creating the {purpose} venv")
    staged_python = str(venv_python(staging))
    with tempfile.TemporaryDirectory() as scratch:
        cpu_deps = Path(scratch) / "cpu-deps.txt"
        cpu_deps.write_text(locks.without_package(project.requirements / "cpu.txt",
                                                  "llama-cpp-python"))
        requirements = [arg for name in lock_names
                        for arg in ("-r", str(project.requirements / f"{name}.txt"))]
        _run([staged_python, "-m", "pip", "install", "--quiet", "--require-hashes",
              *requirements, "-r", str(cpu_deps)], f"installing the locked {purpose} deps")
    _run([staged_python, "-m", "pip", "install", "--quiet", "--no-deps", str(llama_wheel)],
         "installing the llama-cpp-python wheel")
    # Built beside its final name, then renamed: a half-built venv is never used. Only
    # `python -m ...` runs from it, which survives the move (script shebangs would not).
    os.replace(staging, venv)
    return venv


def install_project_wheel(project: Project, python: Path) -> None:
    """Build the llamaship wheel and (re)install it into the venv of `python`."""
    work = project.build_dir / "wheel"
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work) as scratch:
        own_wheel = build_project_wheel(project, python, Path(scratch))
        _run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall",
              str(own_wheel)], f"installing the llamaship wheel into {python.parent.parent}")


def build_project_wheel(project: Project, python: Path, out_dir: Path) -> Path:
    """`python -m build` with the locked build tools of the venv of `python`."""
    _run([str(python), "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out_dir),
          str(project.root)], "building the llamaship wheel")
    return next(out_dir.glob("llamaship-*.whl"))


def build_bundle(project: Project, force: bool = False) -> Path:
    """Build (or reuse) the CPU bundle; returns the path of dist/bundle-manifest.json."""
    target = platforms.current()
    locks.ensure_fresh(project.requirements)
    pin = Pin.from_lock(project.requirements / "cpu.txt")
    llama_wheel = ensure_wheel(pin, PORTABLE, cache_dir() / "wheelhouse")
    key = input_key(project, llama_wheel)
    manifest_path = project.dist / MANIFEST_NAME
    if not force and _is_current(manifest_path, key):
        _log.info("bundle is up to date (%s); nothing to do", manifest_path)
        return manifest_path

    python = venv_python(build_venv(project, llama_wheel))
    install_project_wheel(project, python)
    work = project.build_dir / "bundle"
    spec = write_spec(project, target, project.root / "backend.spec")
    staging_dist = work / "dist"
    shutil.rmtree(staging_dist, ignore_errors=True)
    _run([str(python), "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
          "--distpath", str(staging_dist), "--workpath", str(work / "pyinstaller"), str(spec)],
         "PyInstaller")
    bundle_dir = staging_dist / "backend"
    if target.strip:
        strip_binaries(bundle_dir)
    if target.name != "windows":
        link_duplicates(bundle_dir)
    return _publish(project, target, bundle_dir, key, pin.version, python)


def _is_current(manifest_path: Path, key: str) -> bool:
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return False
    archive = manifest_path.parent / manifest.get("archive", {}).get("name", "")
    return (manifest.get("input_key") == key and archive.is_file()
            and (manifest_path.parent / "backend").is_dir())


def _publish(project: Project, target: platforms.TargetPlatform, bundle_dir: Path, key: str,
             llama_version: str, python: Path) -> Path:
    dist = project.dist
    dist.mkdir(exist_ok=True)
    version = project.version()
    archive_name = f"backend-{version}-{target.tag()}-cpu{target.archive_suffix()}"
    archive = make_archive(bundle_dir, dist / archive_name, target.archive_format)
    digest = sha256_of(archive)
    (dist / f"{archive_name}.sha256").write_text(f"{digest}  {archive_name}\n")
    files = inventory(bundle_dir)
    pyinstaller_version = subprocess.run(
        [str(python), "-c", "import PyInstaller; print(PyInstaller.__version__)"],
        capture_output=True, text=True, check=True).stdout.strip()
    manifest = {
        "name": "backend", "version": version, "variant": "cpu", "platform": target.tag(),
        "llama_cpp_python": llama_version, "python": sys.version.split()[0],
        "pyinstaller": pyinstaller_version, "input_key": key,
        "file_count": files.file_count, "unpacked_bytes": files.total_bytes,
        "largest_components": [{"path": path, "bytes": size}
                               for path, size in files.largest_components(10)],
        "archive": {"name": archive_name, "bytes": archive.stat().st_size, "sha256": digest},
    }
    target_dir = dist / "backend"
    old = dist / ".backend-old"
    shutil.rmtree(old, ignore_errors=True)
    if target_dir.exists():
        os.replace(target_dir, old)
    os.replace(bundle_dir, target_dir)
    shutil.rmtree(old, ignore_errors=True)
    manifest_path = dist / MANIFEST_NAME
    temporary = manifest_path.with_suffix(".tmp")
    temporary.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, manifest_path)
    _log.info("bundle: %s (%d files, %.1f MB unpacked, archive %.1f MB)", target_dir,
              files.file_count, files.total_bytes / 1e6, archive.stat().st_size / 1e6)
    return manifest_path

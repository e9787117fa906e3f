"""`nox -s bundle`: the CPU-only PyInstaller onedir bundle of the backend, plus its archive.

Steps: fresh locks -> portable llama.cpp wheel (wheelhouse) -> the project's own wheel ->
an isolated build venv from the locks -> PyInstaller -> library copies turned into links ->
`dist/backend/`, `dist/backend-<version>-<platform>-cpu.tar.zst` (.zip on Windows; + .sha256),
`dist/bundle-manifest.json`. Skipped when nothing that goes into it changed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from llamaship_build import locks, platforms
from llamaship_build.archive import make_archive
from llamaship_build.debian_root import DebianRoot
from llamaship_build.dedupe import link_duplicates
from llamaship_build.errors import BuildError
from llamaship_build.fit_tool import BUNDLE_FILES, ensure_fit_tool, install_fit_tool
from llamaship_build.glibc import GLIBC, GLIBCXX, GlibcFloor, check_floor, glibc_floors
from llamaship_build.imports_check import check_imports
from llamaship_build.interpreter import llama_lib_dir, site_packages, versions
from llamaship_build.inventory import inventory
from llamaship_build.llama_wheel import PORTABLE, Pin, ensure_wheel
from llamaship_build.notices import write_notices
from llamaship_build.project import Project, cache_dir
from llamaship_build.release_location import release_index_url
from llamaship_build.settings import BuildSettings
from llamaship_build.spec import write_spec
from llamaship_build.strip import strip_binaries
from llamaship_build.toolchain import HOST, Toolchain, select_toolchain
from llamaship_contract.bundle import BundleArchive, BundleManifest, Component
from llamaship_contract.document import dump_document_pretty, parse_document
from llamaship_contract.errors import ContractError
from llamaship_contract.hashing import sha256_of
from llamaship_contract.names import BUNDLE_MANIFEST_NAME

_log = logging.getLogger(__name__)

MANIFEST_NAME = BUNDLE_MANIFEST_NAME
# Everything that changes the bundle; a change anywhere here means a rebuild.
_INPUTS = (
    "contract",
    "runtime",
    "backend",
    "packaging",
    "templates",
    "requirements",
    "pyproject.toml",
)


def input_key(
    project: Project,
    llama_wheel: Path,
    extra_trusted_keys: Sequence[str] = (),
    toolchain: Toolchain = HOST,
    release_url: str | None = None,
) -> str:
    # A Debian root's directory name carries its recipe (a root rebuilt with a patched CPython
    # is another directory), so a new interpreter means a new bundle; no machine's paths.
    # On the host, its own interpreter freezes the bundle.
    recipe = toolchain.path.name if isinstance(toolchain, DebianRoot) else sys.version
    digest = hashlib.sha256(f"{toolchain.name}\0{recipe}\0".encode())
    for public_key in sorted(extra_trusted_keys):
        digest.update(b"extra trusted key\0" + public_key.encode() + b"\0")
    if release_url is not None:
        digest.update(b"release index\0" + release_url.encode() + b"\0")
    for relative in _INPUTS:
        top = project.root / relative
        files = (
            [top]
            if top.is_file()
            else sorted(
                path
                for path in top.rglob("*")
                if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
            )
        )
        for path in files:
            digest.update(path.relative_to(project.root).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    digest.update(sha256_of(llama_wheel).encode())
    return digest.hexdigest()


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def build_venv(
    project: Project,
    llama_wheel: Path,
    purpose: str = "bundle",
    lock_names: tuple[str, ...] = ("base", "build"),
    toolchain: Toolchain = HOST,
) -> Path:
    """An isolated venv from the locks plus the llama wheel; cached by their hashes.

    The venv belongs to `toolchain` (its Python, under its `cache()`); the host path is returned.
    """
    material = b"".join(
        locks.host_lock(project.requirements, name).read_bytes() for name in (*lock_names, "cpu")
    )
    key = hashlib.sha256(
        material + sha256_of(llama_wheel).encode() + toolchain.name.encode()
    ).hexdigest()[:16]
    venv = toolchain.cache() / "venvs" / f"{purpose}-{key}"
    # Only a finished venv has its final name. Not `venv_python(venv).exists()`: in a Debian
    # root its python links to the root's /opt/python, which the host does not have.
    if venv.is_dir():
        return venv
    staging = venv.with_name(venv.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    toolchain.run(
        [toolchain.python, "-m", "venv", toolchain.inside(staging)],
        what=f"creating the {purpose} venv",
    )
    staged_python = toolchain.inside(venv_python(staging))
    with toolchain.scratch() as scratch:
        cpu_deps = scratch / "cpu-deps.txt"
        cpu_deps.write_text(
            locks.without_package(locks.host_lock(project.requirements, "cpu"), "llama-cpp-python")
        )
        requirements: list[str] = []
        for name in lock_names:
            copy = scratch / f"{name}.txt"
            shutil.copyfile(locks.host_lock(project.requirements, name), copy)
            requirements += ["-r", toolchain.inside(copy)]
        wheel = scratch / llama_wheel.name
        shutil.copyfile(llama_wheel, wheel)
        toolchain.run(
            [
                staged_python,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--require-hashes",
                *requirements,
                "-r",
                toolchain.inside(cpu_deps),
            ],
            what=f"installing the locked {purpose} deps",
        )
        toolchain.run(
            [
                staged_python,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                toolchain.inside(wheel),
            ],
            what="installing the llama-cpp-python wheel",
        )
    # Built beside its final name, then renamed: a half-built venv is never used. Only
    # `python -m ...` runs from it, which survives the move (script shebangs would not).
    os.replace(staging, venv)
    return venv


def install_project_wheel(project: Project, python: Path, toolchain: Toolchain = HOST) -> None:
    """Build the llamaship wheel and (re)install it into the venv of `python` (a host path)."""
    work = project.build_dir / "wheel"
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work) as scratch:
        own_wheel = build_project_wheel(project, python, Path(scratch), toolchain)
        # Installed from one fixed path: pip records it in direct_url.json, which the bundle
        # ships (copy_metadata); a path per checkout would make two builds differ.
        stable = toolchain.cache() / "project-wheel" / own_wheel.name
        stable.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(own_wheel, stable)
        toolchain.run(
            [
                toolchain.inside(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--force-reinstall",
                toolchain.inside(stable),
            ],
            what=f"installing the llamaship wheel into {python.parent.parent}",
        )


def build_project_wheel(
    project: Project, python: Path, out_dir: Path, toolchain: Toolchain = HOST
) -> Path:
    """`python -m build` with the locked build tools of the venv of `python`."""
    toolchain.run(
        [
            toolchain.inside(python),
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            toolchain.inside(out_dir),
            toolchain.inside(project.root),
        ],
        what="building the llamaship wheel",
    )
    return next(out_dir.glob("llamaship-*.whl"))


def build_bundle(
    project: Project,
    force: bool = False,
    *,
    extra_trusted_keys: Sequence[str] = (),
    dist: Path | None = None,
) -> Path:
    """Build (or reuse) the CPU bundle; returns the path of its bundle-manifest.json.

    The release bundle goes to dist/ and trusts only runtime/llamaship/trusted_keys.json. A
    bundle for tests also trusts `extra_trusted_keys` (a build input, baked in like the
    release keys) and must go to another `dist` directory. Only a bundle in dist/ has the
    release index URL of `LLAMASHIP_BUILD_RELEASE_INDEX_URL` baked in (`release_location`).
    """
    out = dist or project.dist
    if extra_trusted_keys and out.resolve() == project.dist.resolve():
        msg = (
            f"a bundle that trusts extra keys is for tests only: build it outside "
            f"{project.dist}, where release bundles go"
        )
        raise BuildError(msg)
    target = platforms.current()
    locks.ensure_fresh(project.requirements)
    settings = BuildSettings.resolve(os.environ)
    toolchain = select_toolchain(settings, cache_dir(), binds=(project.root,))
    pin = Pin.from_lock(locks.host_lock(project.requirements, "cpu"))
    llama_wheel = ensure_wheel(pin, PORTABLE, cache_dir() / "wheelhouse", toolchain)
    release_url = (
        release_index_url(settings.release_index_url, project.root / "pyproject.toml")
        if out.resolve() == project.dist.resolve()
        else None
    )
    key = input_key(project, llama_wheel, extra_trusted_keys, toolchain, release_url)
    manifest_path = out / MANIFEST_NAME
    if not force and _is_current(manifest_path, key):
        _log.info("bundle is up to date (%s); nothing to do", manifest_path)
        return manifest_path

    python = venv_python(build_venv(project, llama_wheel, toolchain=toolchain))
    # llama.cpp's memory fit beside the same libllama, built by the same toolchain.
    if target.name in BUNDLE_FILES:
        install_fit_tool(
            ensure_fit_tool(pin, cache_dir() / "fit-tool", toolchain),
            llama_lib_dir(python, toolchain),
        )
    install_project_wheel(project, python, toolchain)
    release = out == project.dist
    work = project.build_dir / ("bundle" if release else f"bundle-{out.name}")
    spec = write_spec(
        project,
        target,
        project.root / ("backend.spec" if release else f"backend-{out.name}.spec"),
        extra_trusted_keys,
        release_url,
    )
    staging_dist = work / "dist"
    shutil.rmtree(staging_dist, ignore_errors=True)
    toolchain.run(
        [
            toolchain.inside(python),
            "-m",
            "PyInstaller",
            "--noconfirm",
            "--log-level",
            "WARN",
            "--distpath",
            str(staging_dist),
            "--workpath",
            str(work / "pyinstaller"),
            str(spec),
        ],
        what=f"PyInstaller ({toolchain.name} toolchain; 1-4 minutes)",
    )
    bundle_dir = staging_dist / "backend"
    if target.strip:
        strip_binaries(bundle_dir)
    if target.name != "windows":
        link_duplicates(bundle_dir)
    # Every library its binaries import is in it or on a clean install (docs/platforms.md).
    checked = check_imports(bundle_dir, target.name)
    _log.info(
        "imports: the %d binaries of the bundle load only its own and the OS's libraries", checked
    )
    floors = None
    if target.name == "linux":  # what the user's system must provide (docs/platforms.md)
        floors = glibc_floors(bundle_dir, (GLIBC, GLIBCXX))
        check_floor(floors[0], settings.glibc_floor)
        check_floor(floors[1], settings.glibcxx_floor)
    write_notices(project.root, bundle_dir, site_packages(python, toolchain))
    return _publish(project, out, target, bundle_dir, key, pin.version, python, toolchain, floors)


def _is_current(manifest_path: Path, key: str) -> bool:
    try:
        manifest = parse_document(BundleManifest, manifest_path.read_bytes(), str(manifest_path))
    except (OSError, ContractError):
        return False
    archive = manifest_path.parent / manifest.archive.name
    return (
        manifest.input_key == key
        and archive.is_file()
        and (manifest_path.parent / "backend").is_dir()
    )


def _publish(
    project: Project,
    dist: Path,
    target: platforms.TargetPlatform,
    bundle_dir: Path,
    key: str,
    llama_version: str,
    python: Path,
    toolchain: Toolchain,
    floors: tuple[GlibcFloor, ...] | None,
) -> Path:
    dist.mkdir(parents=True, exist_ok=True)
    version = project.version()
    archive_name = f"backend-{version}-{target.tag()}-cpu{target.archive_suffix()}"
    archive = make_archive(bundle_dir, dist / archive_name, target.archive_format)
    digest = sha256_of(archive)
    (dist / f"{archive_name}.sha256").write_text(f"{digest}  {archive_name}\n")
    files = inventory(bundle_dir)
    pyinstaller_version, python_version = versions(python, toolchain)
    manifest = BundleManifest(
        name="backend",
        version=version,
        variant="cpu",
        platform=target.tag(),
        llama_cpp_python=llama_version,
        python=python_version,
        pyinstaller=pyinstaller_version,
        input_key=key,
        toolchain=toolchain.name,
        glibc_floor=floors[0].text() if floors is not None else None,
        glibcxx_floor=floors[1].text() if floors is not None else None,
        file_count=files.file_count,
        unpacked_bytes=files.total_bytes,
        largest_components=tuple(
            Component(path=path, bytes=size) for path, size in files.largest_components(10)
        ),
        archive=BundleArchive(name=archive_name, bytes=archive.stat().st_size, sha256=digest),
    )
    target_dir = dist / "backend"
    old = dist / ".backend-old"
    shutil.rmtree(old, ignore_errors=True)
    if target_dir.exists():
        os.replace(target_dir, old)
    os.replace(bundle_dir, target_dir)
    shutil.rmtree(old, ignore_errors=True)
    manifest_path = dist / MANIFEST_NAME
    temporary = manifest_path.with_suffix(".tmp")
    temporary.write_bytes(dump_document_pretty(manifest))
    os.replace(temporary, manifest_path)
    _log.info(
        "bundle: %s (%d files, %.1f MB unpacked, archive %.1f MB)",
        target_dir,
        files.file_count,
        files.total_bytes / 1e6,
        archive.stat().st_size / 1e6,
    )
    return manifest_path

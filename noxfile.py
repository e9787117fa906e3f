"""Sessions of the llamaship build: locks, spec, bundle, overlay, release, tests, benchmarks.

Run them through `scripts/nox` (it installs nox itself from requirements/tools.txt).
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import nox
from nox.command import CommandFailed

nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["dist"]

PYTHON = "3.11"
REQ = "requirements"
# (sys.platform, machine) -> the folder of that OS's locks (llamaship_build.locks.TARGETS).
LOCK_DIRS = {
    ("linux", "x86_64"): REQ,
    ("win32", "amd64"): f"{REQ}/windows-amd64",
    ("darwin", "arm64"): f"{REQ}/macos-arm64",
}
# The build package from the checkout, without installing it (the lock venv has only tools).
CHECKOUT_PATH = {"PYTHONPATH": os.pathsep.join(["packaging", "contract", "runtime"])}


def lock_dir(session: nox.Session) -> str:
    """This machine's locks: Linux, Windows and macOS each have their own."""
    key = (sys.platform, platform.machine().lower())
    if key not in LOCK_DIRS:
        session.error(
            f"no requirement locks for {key[0]} {key[1]}: locks exist for "
            f"{', '.join(f'{os_} {machine}' for os_, machine in LOCK_DIRS)}"
        )
    return LOCK_DIRS[key]


def install_locked(session: nox.Session, *locks: str) -> None:
    """Install this OS's hash-locked requirements (llama-cpp-python: our own wheelhouse)."""
    args = ["--require-hashes"]
    for lock in locks:
        args += ["-r", f"{lock_dir(session)}/{lock}.txt"]
    session.install(*args)


def install_project(session: nox.Session) -> None:
    session.install("--no-deps", "--no-build-isolation", "-e", ".")


def install_llama_wheel(session: nox.Session, flavour: str = "portable") -> None:
    """Compile llama-cpp-python once per flavour (cached wheelhouse) and install it.

    The compile's output is shown (it takes minutes); the wheel's path comes back in a file.
    """
    path_file = Path(session.create_tmp()) / f"llama-wheel-{flavour}.txt"
    session.run(
        "python",
        "-m",
        "llamaship_build",
        "wheel",
        "--flavour",
        flavour,
        "--path-file",
        str(path_file),
    )
    session.install("--no-deps", path_file.read_text(encoding="utf-8").strip())


def build_env(session: nox.Session) -> None:
    install_locked(session, "base", "build")
    install_project(session)


@nox.session(python=PYTHON, tags=["maintenance"], default=False)
def lock(session: nox.Session) -> None:
    """Resolve requirements/*.in into per-OS hash locks with uv (`-- --check`: fail if stale)."""
    install_locked(session, "tools")
    session.run("python", "-m", "llamaship_build.lock_command", *session.posargs, env=CHECKOUT_PATH)


@nox.session(python=PYTHON, tags=["maintenance"], default=False)
def lock_download(session: nox.Session) -> None:
    """Download every OS's locks for its platform tags with --require-hashes (needs PyPI)."""
    install_locked(session, "tools")
    session.run(
        "python", "-m", "llamaship_build.lock_download", *session.posargs, env=CHECKOUT_PATH
    )


@nox.session(python=PYTHON, tags=["lint"])
def lint(session: nox.Session) -> None:
    """ruff format --check, ruff check, mypy --strict (contract, runtime, backend, packaging,
    scripts) and zizmor (the GitHub workflows)."""
    install_locked(session, "base", "build", "dev")
    install_project(session)
    paths = session.posargs or ["."]
    failed = []
    for tool, args in (
        ("ruff format", ["ruff", "format", "--check", *paths]),
        ("ruff check", ["ruff", "check", *paths]),
        ("mypy", ["mypy", *session.posargs]),
        # Offline: the audits that ask GitHub's API need a token; each finding is fixed or
        # justified inline (`# zizmor: ignore[rule] reason`).
        ("zizmor", ["zizmor", "--offline", "--no-progress", ".github/workflows"]),
    ):
        try:
            session.run(*args)
        except CommandFailed:
            failed.append(tool)
    if failed:
        session.error(f"lint findings from {', '.join(failed)} (see above)")


@nox.session(python=PYTHON, tags=["maintenance"], default=False)
def schemas(session: nox.Session) -> None:
    """Export the contract documents' JSON Schemas and the API's OpenAPI document to docs/schemas/
    (`-- --check`)."""
    build_env(session)
    session.run("python", "-m", "llamaship_build", "schemas", *session.posargs)


@nox.session(python=PYTHON, tags=["build"], default=False)
def spec(session: nox.Session) -> None:
    """Render templates/backend.spec.j2 into backend.spec."""
    build_env(session)
    session.run("python", "-m", "llamaship_build", "spec", *session.posargs)


@nox.session(python=PYTHON, tags=["build"], default=False)
def bundle(session: nox.Session) -> None:
    """Build the CPU-only PyInstaller bundle into dist/ (`-- --force` to rebuild)."""
    build_env(session)
    session.run("python", "-m", "llamaship_build", "bundle", *session.posargs)


@nox.session(python=PYTHON, tags=["build"])
def dist(session: nox.Session) -> None:
    """The main job: the CPU bundle, and the CUDA overlay where a CUDA source is configured."""
    build_env(session)
    session.run("python", "-m", "llamaship_build", "bundle")
    session.run("python", "-m", "llamaship_build", "overlay", "--if-configured", *session.posargs)


@nox.session(python=PYTHON, tags=["build"], default=False)
def overlay(session: nox.Session) -> None:
    """Build the signed CUDA overlay layers (`-- --source build|wheel PATH`)."""
    build_env(session)
    session.run("python", "-m", "llamaship_build", "overlay", *session.posargs)


@nox.session(python=PYTHON, tags=["build"], default=False)
def overlay_vulkan(session: nox.Session) -> None:
    """Build the signed llama-vulkan layer (`-- --module PATH` to pack a module built elsewhere)."""
    build_env(session)
    session.run("python", "-m", "llamaship_build", "overlay-vulkan", *session.posargs)


@nox.session(python=PYTHON, tags=["build"], default=False)
def release(session: nox.Session) -> None:
    """Bundle + overlay (posargs go to overlay) + the signed releases.json, in dist/release/."""
    build_env(session)
    session.run("python", "-m", "llamaship_build", "bundle")
    session.run("python", "-m", "llamaship_build", "overlay", *session.posargs)
    session.run("python", "-m", "llamaship_build", "release")


@nox.session(python=PYTHON, tags=["build"], default=False)
def index(session: nox.Session) -> None:
    """Only the signed releases.json over the layers already in dist/overlay/ (release CI)."""
    build_env(session)
    session.run("python", "-m", "llamaship_build", "release", *session.posargs)


def reproducible_env(session: nox.Session) -> dict[str, str]:
    """SOURCE_DATE_EPOCH from the commit and a fixed hash seed: byte-identical outputs."""
    epoch = session.run("git", "log", "-1", "--format=%ct", external=True, silent=True)
    return {"SOURCE_DATE_EPOCH": str(epoch).strip(), "PYTHONHASHSEED": "0"}


@nox.session(python=PYTHON, tags=["release"], default=False)
def release_bundle(session: nox.Session) -> None:
    """Release CI: the CPU bundle, reproducibly, and its per-OS named assets in dist/assets/."""
    build_env(session)
    # The release index a release bundle looks in: this repository's GitHub Pages index.
    pages = os.environ.get("LLAMASHIP_BUILD_RELEASE_INDEX_URL", "pages")
    env = {**reproducible_env(session), "LLAMASHIP_BUILD_RELEASE_INDEX_URL": pages}
    session.run("python", "-m", "llamaship_build", "bundle", *session.posargs, env=env)
    session.run("python", "-m", "llamaship_build", "release-assets", "dist/assets", env=env)


@nox.session(python=PYTHON, tags=["release"], default=False)
def check_imports(session: nox.Session) -> None:
    """Fail unless every library the binaries in a bundle or layer folder import is in that
    folder or on a clean install of this OS (`-- DIR`; default dist/backend)."""
    build_env(session)
    session.run(
        "python", "-m", "llamaship_build", "check-imports", *(session.posargs or ["dist/backend"])
    )


@nox.session(python=PYTHON, tags=["release"], default=False)
def release_overlay(session: nox.Session) -> None:
    """Release CI: the CUDA overlay layers, unsigned (the CUDA module compiled with nvcc)."""
    build_env(session)
    session.run(
        "python",
        "-m",
        "llamaship_build",
        "overlay",
        "--unsigned",
        *(session.posargs or ["--source", "build"]),
        env=reproducible_env(session),
    )


def signing_env(session: nox.Session) -> None:
    """The signing steps' environment: requirements/signing.txt alone, nothing of the build.

    The build package, the contract and the runtime come from the checkout (PYTHONPATH), so
    no wheel is built and nothing but that lock is installed where the key is used.
    """
    install_locked(session, "signing")


def run_signing(session: nox.Session, *args: str) -> None:
    session.run("python", "-m", "llamaship_build", *args, env=CHECKOUT_PATH)


@nox.session(python=PYTHON, tags=["release"], default=False)
def check_signing_key(session: nox.Session) -> None:
    """Fail unless $LLAMASHIP_SIGNING_KEY's public half is among the bundle's trusted keys."""
    signing_env(session)
    run_signing(session, "check-signing-key", *session.posargs)


@nox.session(python=PYTHON, tags=["release"], default=False)
def sign_release(session: nox.Session) -> None:
    """Release CI's signing job: key check, manifest signatures, the index (`-- --dry-run`)."""
    signing_env(session)
    run_signing(session, "sign-release", *session.posargs)


@nox.session(python=PYTHON, tags=["release"], default=False)
def release_sums(session: nox.Session) -> None:
    """Write SHA256SUMS over every release asset (default directory: dist/release)."""
    signing_env(session)
    run_signing(session, "release-assets", *(session.posargs or ["dist/release"]), "--sums")


@nox.session(python=False, tags=["release"], default=False)
def check_outputs(session: nox.Session) -> None:
    """Check the cached compiled outputs against requirements/build-outputs.json (`-- record`).

    Standard library only: it runs on nox's own Python, before any build environment."""
    session.run(
        sys.executable,
        "-m",
        "llamaship_build.output_pins",
        *(session.posargs or ["check"]),
        env=CHECKOUT_PATH,
        external=True,
    )


@nox.session(python=PYTHON, tags=["release"], default=False)
def publish(session: nox.Session) -> None:
    """Publish `-- TAG DIR` as a GitHub release: a draft until every asset is uploaded."""
    build_env(session)
    session.run("python", "-m", "llamaship_build", "publish", *session.posargs)


@nox.session(python=PYTHON, tags=["build"], default=False)
def repro(session: nox.Session) -> None:
    """Build the bundle twice from clean exports of HEAD at different paths; compare bytes."""
    build_env(session)
    session.run("python", "-m", "llamaship_build", "repro", *session.posargs)


@nox.session(name="resign-index", python=PYTHON, tags=["release"], default=False)
def resign_index(session: nox.Session) -> None:
    """Re-sign the live index with $LLAMASHIP_INDEX_KEY (the scheduled resign-index.yml)."""
    signing_env(session)
    run_signing(session, "resign-index", *session.posargs)


@nox.session(python=PYTHON, tags=["test"])
def tests(session: nox.Session) -> None:
    """Lock check, then every test tier (docs/testing.md; `-- -m "not slow"`: the fast part)."""
    install_locked(session, "base", "build", "dev")
    install_project(session)
    session.run("python", "-m", "llamaship_build", "lock", "--check")
    install_llama_wheel(session)
    session.run("npm", "ci", "--silent", "--prefix", "tests/tools", external=True)
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python=PYTHON, tags=["bench"], default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks: bundle size, launch time, tokens/s portable vs native; docs/benchmarks.md."""
    install_locked(session, "base", "build", "dev")
    install_project(session)
    install_llama_wheel(session)
    session.run("python", "-m", "llamaship_build", "bundle")
    session.run("python", "-m", "llamaship_build", "bench", *session.posargs)

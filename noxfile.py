"""Sessions of the llamaship build: locks, spec, bundle, overlay, release, tests, benchmarks.

Run them through `scripts/nox` (it installs nox itself from requirements/tools.txt).
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["dist"]

PYTHON = "3.11"
REQ = "requirements"


def install_locked(session: nox.Session, *locks: str) -> None:
    """Install hash-locked requirements (llama-cpp-python comes from our own wheelhouse)."""
    args = ["--require-hashes"]
    for lock in locks:
        args += ["-r", f"{REQ}/{lock}.txt"]
    session.install(*args)


def install_project(session: nox.Session) -> None:
    session.install("--no-deps", "--no-build-isolation", "-e", ".")


def install_llama_wheel(session: nox.Session, flavour: str = "portable") -> None:
    """Compile llama-cpp-python once per flavour (cached wheelhouse) and install it."""
    wheel = session.run("python", "-m", "llamaship_build", "wheel", "--flavour", flavour,
                        silent=True)
    session.install("--no-deps", str(wheel).strip().splitlines()[-1])


def build_env(session: nox.Session) -> None:
    install_locked(session, "base", "build")
    install_project(session)


@nox.session(python=PYTHON, tags=["maintenance"], default=False)
def lock(session: nox.Session) -> None:
    """Compile requirements/*.in into hash-locked *.txt (`-- --check`: fail on stale locks)."""
    install_locked(session, "tools")
    install_project(session)
    session.run("python", "-m", "llamaship_build", "lock", *session.posargs)


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
    """The main job: the CPU bundle, and the CUDA overlay where a CUDA source is reachable."""
    build_env(session)
    session.run("python", "-m", "llamaship_build", "bundle")
    session.run("python", "-m", "llamaship_build", "overlay", "--if-reachable", *session.posargs)


@nox.session(python=PYTHON, tags=["build"], default=False)
def overlay(session: nox.Session) -> None:
    """Build the signed CUDA overlay layers (`-- --source wheel-index|build|wheel PATH`)."""
    build_env(session)
    session.run("python", "-m", "llamaship_build", "overlay", *session.posargs)


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


@nox.session(python=PYTHON, tags=["test"])
def tests(session: nox.Session) -> None:
    """Lock check, then the whole test suite (integration tests build the bundle, cached)."""
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

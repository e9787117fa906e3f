"""`nox -s repro`: build the bundle (and the overlay layers) twice and compare the bytes.

Each build runs in its own clean export of the commit (`git archive HEAD`), at paths of
different lengths, with `SOURCE_DATE_EPOCH` set to the commit time and `PYTHONHASHSEED=0`.
Both builds share the compiled llama-cpp-python wheel (the wheelhouse, keyed by sdist hash and
flags): CI checks the bundle and layer steps that way (tests/test_repro.py). `--compile` first
compiles the wheel and the fit tool twice, each in a fresh scratch directory and an empty
cache, and compares them (about 30 minutes on 2 cores). When outputs differ, the report names
the members that differ.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from llamaship_build.archive import SUFFIXES
from llamaship_build.errors import BuildError
from llamaship_build.fit_tool import FitTool, ensure_fit_tool
from llamaship_build.llama_wheel import PACKAGE, PORTABLE, Pin, ensure_wheel
from llamaship_build.toolchain import Toolchain
from llamaship_contract.hashing import sha256_of

_log = logging.getLogger(__name__)

# What a release ships and must be byte-identical: bundle archives and overlay layers, and the
# manifests and checksums beside them.
ARCHIVE_SUFFIXES = (*SUFFIXES.values(),)
COMPARED_SUFFIXES = (*ARCHIVE_SUFFIXES, ".json", ".sha256")
_CHUNK = 1 << 20


class NotReproducible(BuildError):
    """Two builds of the same commit differ."""


def _tar_members(archive: Path) -> Iterator[tuple[str, str]]:
    """(name, description) per member of a tar or zip, with content hashes (for reports)."""
    import tarfile
    import zipfile

    if archive.name.endswith((".zip", ".whl")):
        with zipfile.ZipFile(archive) as handle:
            for info in handle.infolist():
                digest = hashlib.sha256(handle.read(info)).hexdigest()
                yield (
                    info.filename,
                    f"mode {info.external_attr >> 16:o} date {info.date_time} sha256 {digest[:16]}",
                )
        return
    from llamaship_build.archive import decompressed

    with (
        open(archive, "rb") as raw,
        decompressed(archive, raw) as stream,
        tarfile.open(fileobj=stream, mode="r|") as tar,
    ):
        for member in tar:
            digest = ""
            if member.isreg():
                data = tar.extractfile(member)
                assert data is not None
                hasher = hashlib.sha256()
                while block := data.read(_CHUNK):
                    hasher.update(block)
                digest = hasher.hexdigest()[:16]
            yield (
                member.name,
                (
                    f"{member.type!r} mode {member.mode:o} mtime {member.mtime} "
                    f"link {member.linkname!r} sha256 {digest}"
                ),
            )


def member_differences(first: Path, second: Path, limit: int = 20) -> list[str]:
    """The members that differ between two archives (missing, extra, other metadata/bytes)."""
    one, two = dict(_tar_members(first)), dict(_tar_members(second))
    problems = [
        f"{name}: {one.get(name, 'absent')} / {two.get(name, 'absent')}"
        for name in sorted(one.keys() | two.keys())
        if one.get(name) != two.get(name)
    ]
    if not problems and list(one) != list(two):
        problems.append("the same members in another order")
    return problems[:limit]


def compare_outputs(first: Path, second: Path) -> list[str]:
    """Differences between two build output directories, over the archives, manifests and
    checksums in them. Empty when both hold the same names with identical bytes.
    """

    def shipped(directory: Path) -> dict[str, Path]:
        # dist/ and dist/overlay/: not the unpacked bundle (dist/backend/), which the archive holds
        return {
            path.relative_to(directory).as_posix(): path
            for path in sorted([*directory.glob("*"), *directory.glob("overlay/*")])
            if path.is_file() and path.name.endswith(COMPARED_SUFFIXES)
        }

    one, two = shipped(first), shipped(second)
    if not any(name.endswith(ARCHIVE_SUFFIXES) for name in one.keys() | two.keys()):
        return [f"neither {first} nor {second} holds an archive: did the builds run?"]
    problems = [
        f"{name}: only in {second if name in two else first}"
        for name in sorted(one.keys() ^ two.keys())
    ]
    for name in sorted(one.keys() & two.keys()):
        if sha256_of(one[name]) != sha256_of(two[name]):
            details = (
                member_differences(one[name], two[name]) if name.endswith(ARCHIVE_SUFFIXES) else []
            )
            problems.append(f"{name} differs" + "".join(f"\n    {line}" for line in details))
    return problems


def _compare_files(first: Path, second: Path) -> list[str]:
    if sha256_of(first) == sha256_of(second):
        return []
    if first.name.endswith(".whl"):
        details = member_differences(first, second)
        return [f"{first.name} differs" + "".join(f"\n    {line}" for line in details)]
    return [f"{first.name} differs ({first} / {second})"]


Compiled = tuple[Path, FitTool]


def compile_both(pin: Pin, cache: Path, toolchain: Toolchain) -> Compiled:
    """The portable wheel and the fit tool, compiled into `cache` (wheelhouse/, fit-tool/)."""
    wheel = ensure_wheel(pin, PORTABLE, cache / "wheelhouse", toolchain)
    return wheel, ensure_fit_tool(pin, cache / "fit-tool", toolchain)


def compile_twice(
    pin: Pin,
    work: Path,
    toolchain: Toolchain,
    compile_into: Callable[[Pin, Path, Toolchain], Compiled] = compile_both,
) -> list[str]:
    """Compile the wheel and the fit tool twice, into the new directories `work`/a and
    `work`/b (each compile in its own fresh scratch directory); the differences (empty:
    byte-identical)."""
    if work.exists():
        msg = f"{work} exists: give the compiles a new directory (nothing cached may be reused)"
        raise BuildError(msg)
    outputs: list[Compiled] = []
    for name in ("a", "b"):
        _log.info("repro: compiling %s %s into %s", PACKAGE, pin.version, work / name)
        outputs.append(compile_into(pin, work / name, toolchain))
    (wheel_a, tool_a), (wheel_b, tool_b) = outputs
    problems = _compare_files(wheel_a, wheel_b)
    if [path.name for path in tool_a.files] != [path.name for path in tool_b.files]:
        problems.append(f"the fit tools hold other files: {tool_a.directory} / {tool_b.directory}")
    else:
        for one, two in zip(tool_a.files, tool_b.files, strict=True):
            problems += _compare_files(one, two)
    return problems


def adopt(compiled: Path, cache: Path) -> None:
    """Put the slots compiled under `compiled` (wheelhouse/, fit-tool/) into `cache`, where the
    builds look, unless the cache has them already."""
    for kind in ("wheelhouse", "fit-tool"):
        for slot in sorted((compiled / kind).iterdir()):
            target = cache / kind / slot.name
            if slot.is_dir() and not target.exists():
                partial = target.with_name(target.name + ".partial")
                shutil.rmtree(partial, ignore_errors=True)
                shutil.copytree(slot, partial)
                os.replace(partial, target)


def prove_compile(pin: Pin, work: Path, cache: Path, toolchain: Toolchain) -> None:
    """Compile twice under `work` and compare; when identical, the first pair goes into
    `cache` for the builds that follow. Raises NotReproducible naming what differs."""
    problems = compile_twice(pin, work, toolchain)
    if problems:
        raise NotReproducible("two compiles differ:\n  " + "\n  ".join(problems))
    adopt(work / "a", cache)


def commit_epoch(root: Path) -> int:
    """The commit time of HEAD (SOURCE_DATE_EPOCH for the builds)."""
    result = subprocess.run(
        ["git", "-C", str(root), "log", "-1", "--format=%ct"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        msg = f"cannot read the commit time of {root}: {result.stderr.strip()}"
        raise BuildError(msg)
    return int(result.stdout.strip())


def export_commit(root: Path, dest: Path) -> Path:
    """A clean copy of HEAD's tree at `dest` (no build outputs, no uncommitted changes)."""
    dest.mkdir(parents=True)
    with subprocess.Popen(
        ["git", "-C", str(root), "archive", "--format=tar", "HEAD"], stdout=subprocess.PIPE
    ) as archive:
        unpacked = subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, check=False)
    if archive.returncode != 0 or unpacked.returncode != 0:
        msg = f"cannot export HEAD of {root} into {dest}"
        raise BuildError(msg)
    return dest


def build_env(epoch: int, checkout: Path, base: Mapping[str, str]) -> dict[str, str]:
    """The environment of one build: the checkout's own packages, fixed time and hash seed."""
    return {
        **base,
        "SOURCE_DATE_EPOCH": str(epoch),
        "PYTHONHASHSEED": "0",
        "LLAMASHIP_BUILD_ROOT": str(checkout),
        "PYTHONPATH": os.pathsep.join(
            [str(checkout / part) for part in ("packaging", "contract", "runtime", "backend")]
        ),
    }


def build_twice(root: Path, work: Path, steps: Sequence[Sequence[str]]) -> list[str]:
    """Run `steps` (llamaship_build commands) in two exports of HEAD; returns differences."""
    epoch = commit_epoch(root)
    checkouts = [
        export_commit(root, work / "a" / "src"),
        export_commit(root, work / "b" / "a-longer-path" / "src"),
    ]
    for checkout in checkouts:
        env = build_env(epoch, checkout, os.environ)
        for step in steps:
            _log.info("repro: %s in %s", " ".join(step), checkout)
            result = subprocess.run(
                [sys.executable, "-m", "llamaship_build", *step], cwd=checkout, env=env, check=False
            )
            if result.returncode != 0:
                msg = f"`{' '.join(step)}` failed in {checkout} (exit {result.returncode})"
                raise BuildError(msg)
    first, second = (checkout / "dist" for checkout in checkouts)
    return compare_outputs(first, second)

"""Licence files shipped in the bundle: llamaship's LICENSE and THIRD_PARTY_NOTICES.txt.

The notices are generated at bundle build time from what the bundle really ships: every
distribution pinned in this OS's `base` and `cpu` locks, read from the build venv's installed
metadata (version, licence expression, and the text of each licence file the distribution
carries), plus llama.cpp (vendored inside llama-cpp-python; its MIT text is kept in
`packaging/licenses/`) and the CPython the bundle embeds (its LICENSE.txt).
"""

from __future__ import annotations

import re
import sys
import sysconfig
from collections.abc import Iterable, Sequence
from importlib.metadata import Distribution, distributions
from pathlib import Path

from llamaship_build import locks
from llamaship_build.errors import BuildError

NOTICES_NAME = "THIRD_PARTY_NOTICES.txt"
LICENSE_NAME = "LICENSE.txt"
# Locks whose distributions end up in the bundle (the build lock's tools do not).
SHIPPED_LOCKS = ("base", "cpu")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", re.MULTILINE)
_LICENCE_NAME = re.compile(r"^(LICEN[CS]E|COPYING|NOTICE|AUTHORS)", re.IGNORECASE)
_RULE = "=" * 78


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def shipped_names(requirements: Path) -> list[str]:
    """The distributions this OS's bundle ships: every pin of its base and cpu locks."""
    names: set[str] = set()
    for lock in SHIPPED_LOCKS:
        text = locks.host_lock(requirements, lock).read_text(encoding="utf-8")
        names.update(normalized(name) for name in _PIN.findall(text))
    return sorted(names)


def _licence_texts(distribution: Distribution) -> list[tuple[str, str]]:
    """(file name, text) of each licence file in the distribution's metadata directory."""
    texts = []
    for file in sorted(distribution.files or (), key=str):
        parts = file.parts
        if parts and parts[0].endswith(".dist-info") and _LICENCE_NAME.match(file.name):
            text = distribution.read_text(str(Path(*parts[1:])))
            if text is not None:
                texts.append((Path(*parts[1:]).as_posix(), text.strip()))
    return texts


def _section(title: str, licence: str, texts: Iterable[tuple[str, str]]) -> str:
    body = (
        "\n\n".join(f"--- {name} ---\n{text}" for name, text in texts)
        or "(the distribution ships no licence file)"
    )
    return f"{_RULE}\n{title}\nLicence: {licence}\n{_RULE}\n\n{body}\n"


def notices_text(
    site_packages: Path, names: Sequence[str], extra: Sequence[tuple[str, str, Path]]
) -> str:
    """THIRD_PARTY_NOTICES.txt for `names` installed in `site_packages`, plus `extra`
    (title, licence, file) entries."""
    found = {
        normalized(dist.metadata["Name"]): dist for dist in distributions(path=[str(site_packages)])
    }
    missing = [name for name in names if name not in found]
    if missing:
        msg = (
            f"the bundle's distributions {', '.join(missing)} are not installed in "
            f"{site_packages}: rebuild the build venv (delete it from the build cache)"
        )
        raise BuildError(msg)
    sections = [
        "Third-party software shipped in this llamaship bundle, with the licence "
        "terms each is distributed under.\n"
    ]
    for title, licence, path in extra:
        sections.append(_section(title, licence, [(path.name, path.read_text().strip())]))
    for name in names:
        dist = found[name]
        declared = dist.metadata["License-Expression"] or dist.metadata["License"] or ""
        licence = (
            declared.strip().splitlines()[0] if declared.strip() else "see the licence files below"
        )
        sections.append(
            _section(f"{dist.metadata['Name']} {dist.version}", licence, _licence_texts(dist))
        )
    return "\n".join(sections)


def python_licence(stdlib: Path | None = None) -> Path:
    """The LICENSE.txt of the CPython that builds (and is embedded in) the bundle."""
    roots = [stdlib] if stdlib else [Path(sysconfig.get_paths()["stdlib"]), Path(sys.base_prefix)]
    for root in roots:
        if (root / "LICENSE.txt").is_file():
            return root / "LICENSE.txt"
    msg = (
        f"no CPython LICENSE.txt in {', '.join(map(str, roots))}: the bundle must ship "
        "Python's licence; build with a complete CPython installation"
    )
    raise BuildError(msg)


def write_notices(root: Path, bundle_dir: Path, site_packages: Path) -> list[Path]:
    """Write LICENSE.txt and THIRD_PARTY_NOTICES.txt into `bundle_dir` (checkout `root`)."""
    extra = [
        (
            "llama.cpp (built into llama-cpp-python's libraries)",
            "MIT",
            root / "packaging" / "licenses" / "llama.cpp-LICENSE.txt",
        ),
        (f"Python {sys.version.split()[0]}", "PSF-2.0", python_licence()),
    ]
    text = notices_text(site_packages, shipped_names(root / "requirements"), extra)
    licence = bundle_dir / LICENSE_NAME
    licence.write_text((root / "LICENSE").read_text(encoding="utf-8"), encoding="utf-8")
    notices = bundle_dir / NOTICES_NAME
    notices.write_text(text, encoding="utf-8")
    return [licence, notices]

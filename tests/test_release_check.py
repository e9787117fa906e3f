"""The launch's look at the release index: at most once a day, an off switch, and a decision
that says the index was not checked (and why) instead of "no release offers one"."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fixtures_release import Release
from hardware.fakes import FakeHardware
from llamaship.bundled_release import bundled_release_url
from llamaship.config import Settings, resolve_settings
from llamaship.errors import ConfigError
from llamaship.launch.decide import decide
from llamaship.launch.plan import release_decision
from llamaship.launch.release_check import CHECK_INTERVAL_S, Refusal, check_file, check_release
from llamaship_contract.errors import LlamashipError
from llamaship_contract.overlay import OverlayRequirements
from overlay_kit.releases import Keys, ReleaseFactory, ReleaseSpec
from overlay_kit.server import OverlayServer, serving
from test_bootstrap import boot
from test_decide import CU13, GTX_1060, RTX_3060, _gpu, _report

DAY = CHECK_INTERVAL_S


class Index:
    """The lookup a launch passes in (the bounded find_overlay), counting its calls."""

    def __init__(self, answer: OverlayRequirements | Refusal | Exception) -> None:
        self.answer = answer
        self.calls: list[str] = []

    def __call__(self, url: str) -> OverlayRequirements | Refusal:
        self.calls.append(url)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def settings(home: Path, **env: str) -> Settings:
    return resolve_settings(env={"LLAMASHIP_HOME": str(home), **env})


NONE_FITS = Refusal("GPU 0 (NVIDIA GeForce GTX 1060) has compute capability 6.1")


def test_without_a_release_url_nothing_is_checked_and_the_reason_says_so(tmp_path: Path) -> None:
    index = Index(NONE_FITS)
    check = check_release(settings(tmp_path), tmp_path, "gpus", index)
    assert index.calls == [] and check.available is None
    assert check.unchecked is not None
    assert check.unchecked.startswith("no release index was checked: this build names none")


def test_the_off_switch_skips_the_check(tmp_path: Path) -> None:
    index = Index(NONE_FITS)
    off = settings(tmp_path, LLAMASHIP_RELEASE_URL="https://x/r.json", LLAMASHIP_RELEASE_CHECK="0")
    check = check_release(off, tmp_path, "gpus", index)
    assert index.calls == []
    assert check.unchecked == "no release index was checked: LLAMASHIP_RELEASE_CHECK is off"


def test_the_index_is_read_at_most_once_a_day_per_index_and_machine(tmp_path: Path) -> None:
    gpu_requirements = CU13
    index = Index(gpu_requirements)
    on = settings(tmp_path, LLAMASHIP_RELEASE_URL="https://x/r.json")
    first = check_release(on, tmp_path, "gpus", index, now=lambda: 1000.0)
    later = check_release(on, tmp_path, "gpus", index, now=lambda: 1000.0 + DAY - 1)
    assert first.available == later.available == gpu_requirements
    assert first.unchecked is later.unchecked is None
    assert index.calls == ["https://x/r.json"]
    check_release(on, tmp_path, "other gpus", index, now=lambda: 1001.0)
    assert len(index.calls) == 2  # another machine (fingerprint): checked again
    check_release(on, tmp_path, "other gpus", index, now=lambda: 1001.0 + DAY)
    assert len(index.calls) == 3  # a day later: checked again
    assert check_file(tmp_path).is_file()


def test_why_the_index_offers_none_is_kept_for_the_day(tmp_path: Path) -> None:
    index = Index(NONE_FITS)
    on = settings(tmp_path, LLAMASHIP_RELEASE_URL="https://x/r.json")
    first = check_release(on, tmp_path, "gpus", index, now=lambda: 0.0)
    later = check_release(on, tmp_path, "gpus", index, now=lambda: 60.0)
    assert len(index.calls) == 1
    for check in (first, later):
        assert check.available is None and check.unchecked is None
        assert check.refused == NONE_FITS.reason


def test_a_failed_check_says_it_was_not_checked_and_waits_a_day(tmp_path: Path) -> None:
    index = Index(LlamashipError("cannot reach x"))
    on = settings(tmp_path, LLAMASHIP_RELEASE_URL="https://x/r.json")
    failed = check_release(on, tmp_path, "gpus", index, now=lambda: 0.0)
    assert failed.note == "could not check for a CUDA overlay: cannot reach x"
    assert failed.unchecked is not None
    assert failed.unchecked.startswith("the release index could not be checked (cannot reach x)")
    again = check_release(on, tmp_path, "gpus", index, now=lambda: 60.0)
    assert len(index.calls) == 1 and again.note is None
    assert again.unchecked is not None and "could not be checked at 1970-01-01 00:00 UTC" in (
        again.unchecked
    )


def test_the_decision_never_claims_no_release_when_none_was_checked() -> None:
    gpu_report = _report(RTX_3060)
    unchecked = "no release index was checked: LLAMASHIP_RELEASE_CHECK is off"
    decision = decide(gpu_report, None, None, None, unchecked)
    assert decision.variant == "cpu" and not decision.upgrade_available
    assert "no release offers one" not in decision.reason
    assert decision.reason == (f"no CUDA overlay is installed and {unchecked}; running on CPU")
    assert "no release offers one" in decide(gpu_report, None, None, None).reason


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, None),
        ('{"release_url": null}', None),
        (
            '{"release_url": "https://o.github.io/r/releases.json"}',
            "https://o.github.io/r/releases.json",
        ),
    ],
    ids=["no-file", "none-baked", "baked"],
)
def test_the_bundled_release_url(
    tmp_path: Path, content: str | None, expected: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "bakedpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    if content is not None:
        (package / "release.json").write_text(content)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert bundled_release_url("bakedpkg") == expected
    sys.modules.pop("bakedpkg", None)


def test_a_broken_bundled_release_file_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "brokenpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "release.json").write_text('{"release_url": "http://plain/"}')
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="reinstall the application"):
        bundled_release_url("brokenpkg")
    sys.modules.pop("brokenpkg", None)


def test_a_gpu_machine_is_offered_the_overlay_and_the_check_is_kept(
    tmp_path: Path, overlay_release: Release
) -> None:
    """What `detect` prints and a launch decides: the release checked as a launch checks it."""
    home = tmp_path / "home"
    report = _report(_gpu(0, "NVIDIA GeForce RTX 2080", "7.5", 8192))
    on = settings(home, LLAMASHIP_RELEASE_URL=str(overlay_release.index))
    decision = release_decision(on, report, (overlay_release.public_key,))
    assert decision.upgrade_available, decision.reason
    assert decision.reason.startswith("no overlay installed; upgrade available"), decision.reason
    assert check_file(home / "state").is_file()
    off = settings(
        home, LLAMASHIP_RELEASE_URL=str(overlay_release.index), LLAMASHIP_RELEASE_CHECK="no"
    )
    decision = release_decision(off, report, (overlay_release.public_key,))
    assert not decision.upgrade_available
    assert "LLAMASHIP_RELEASE_CHECK is off" in decision.reason


def test_a_pascal_gpu_is_told_why_no_cuda_overlay_fits_also_from_the_cache(
    tmp_path: Path, releases: ReleaseFactory, release_keys: Keys
) -> None:
    """The release's CUDA overlay starts at Turing (sm_75): the decision says that a GTX 1060
    (compute capability 6.1) cannot run it, not that no release offers one."""
    home = tmp_path / "home"
    index = releases.publish(tmp_path / "release", ReleaseSpec())
    on = settings(home, LLAMASHIP_RELEASE_URL=str(index))
    first = release_decision(on, _report(GTX_1060), (release_keys.public,))
    index.unlink()  # the day's kept answer stands
    later = release_decision(on, _report(GTX_1060), (release_keys.public,))
    for decision in (first, later):
        assert not decision.upgrade_available
        assert decision.reason.startswith("no CUDA overlay is installed and none fits: ")
        assert "GPU 0 (NVIDIA GeForce GTX 1060) has compute capability 6.1" in decision.reason
        assert decision.reason.endswith("; running on CPU")


def test_two_launches_read_the_index_once_and_status_shows_the_offer(
    gpu_machine: FakeHardware, overlay_release: Release
) -> None:
    with serving(OverlayServer(overlay_release.directory), "release-server") as server:
        url = f"{server.url}releases.json"
        first = boot(gpu_machine, overlay_release, LLAMASHIP_RELEASE_URL=url)
        second = boot(gpu_machine, overlay_release, LLAMASHIP_RELEASE_URL=url)
        assert len(server.requested("releases.json")) == 1  # the second launch: from the cache
    for capabilities in (first, second):
        assert capabilities["decision"]["upgrade_available"] is True, capabilities["decision"]
    status = gpu_machine.run_cli("status", trust=overlay_release.public_key)
    assert "upgrade:      a CUDA overlay is available" in status.stdout, status.stdout
    off = boot(
        gpu_machine, overlay_release, LLAMASHIP_RELEASE_URL=url, LLAMASHIP_RELEASE_CHECK="false"
    )
    assert off["decision"]["upgrade_available"] is False
    assert (
        "no release index was checked: LLAMASHIP_RELEASE_CHECK is off"
        in (off["decision"]["reason"])
    )

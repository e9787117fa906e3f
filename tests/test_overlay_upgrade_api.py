"""The ways an upgrade is started: at launch (`ensure_overlay`), as a background job through
`POST /api/admin/upgrade-gpu`, and with `llamaship overlay ...`."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from fixtures_backend import admin_headers
from hardware.fakes import RTX_3060, FakeHardware
from llamaship.config import resolve_settings
from llamaship.launch.outcome import BootState
from llamaship.overlay.best import BestInstall
from llamaship.overlay.install import (
    Installer,
    ProbeRejected,
    ProgressFn,
    ensure_overlay,
)
from llamaship.overlay.jobs import UpgradeJobs
from llamaship.overlay.store import OverlayStore, StoreError
from llamaship.paths import DataDirs
from llamaship_backend.cli import main
from llamaship_backend.dependencies import attach
from llamaship_backend.error_replies import install_error_replies
from llamaship_backend.routes_upgrade import get_installer_factory, router
from llamaship_backend.server import BackendServer, bind_listener, listening_url
from overlay_kit.checks import assert_settled
from overlay_kit.child import start_installer
from overlay_kit.probe import layer_probe
from overlay_kit.releases import (
    FAST_OPTIONS,
    GPU_REPORT,
    LLAMA_CPP_VERSION,
    TARGET,
    Keys,
    ReleaseFactory,
    ReleaseSpec,
)

V1 = ReleaseSpec(overlay_version="0.3.36-cu13.0-1", serial=1)


def settings_for(dirs: DataDirs, keys: Keys, release: Path | None) -> Any:
    """Settings for `dirs` (release keys go through the API: see `ensure_overlay` calls)."""
    del keys
    env = {"LLAMASHIP_HOME": str(dirs.home)}
    if release is not None:
        env["LLAMASHIP_RELEASE_URL"] = str(release)
    return resolve_settings(env=env)


# -- at launch -----------------------------------------------------------------------------


def test_launch_installs_then_finds_the_overlay_current(
    releases: ReleaseFactory, release_keys: Keys, data_dirs: DataDirs, tmp_path: Path
) -> None:
    settings = settings_for(data_dirs, release_keys, releases.publish(tmp_path / "r", V1))

    trusted = [release_keys.public]
    first = ensure_overlay(
        settings, data_dirs, GPU_REPORT, LLAMA_CPP_VERSION, probe=layer_probe, trusted_keys=trusted
    )
    second = ensure_overlay(
        settings, data_dirs, GPU_REPORT, LLAMA_CPP_VERSION, probe=layer_probe, trusted_keys=trusted
    )

    assert (first.status, first.message) == ("installed", f"installed overlay {V1.overlay_version}")
    assert first.active is not None and first.active.overlay_version == V1.overlay_version
    assert second.status == "current"
    assert_settled(data_dirs, V1.overlay_version)


def test_launch_without_release_url_skips(release_keys: Keys, data_dirs: DataDirs) -> None:
    outcome = ensure_overlay(
        settings_for(data_dirs, release_keys, None),
        data_dirs,
        GPU_REPORT,
        LLAMA_CPP_VERSION,
        trusted_keys=[release_keys.public],
    )
    assert outcome.status == "skipped" and "LLAMASHIP_RELEASE_URL" in outcome.message
    assert outcome.active is None


def test_launch_reports_a_failure_instead_of_raising(
    releases: ReleaseFactory,
    release_keys: Keys,
    stranger_keys: Keys,
    data_dirs: DataDirs,
    tmp_path: Path,
) -> None:
    settings = settings_for(data_dirs, stranger_keys, releases.publish(tmp_path / "r", V1))

    outcome = ensure_overlay(
        settings,
        data_dirs,
        GPU_REPORT,
        LLAMA_CPP_VERSION,
        probe=layer_probe,
        trusted_keys=[stranger_keys.public],
    )

    assert outcome.status == "failed" and "unknown key" in outcome.message
    assert_settled(data_dirs, None)


def test_launch_skips_a_quarantined_release(
    releases: ReleaseFactory, release_keys: Keys, data_dirs: DataDirs, tmp_path: Path
) -> None:
    settings = settings_for(data_dirs, release_keys, releases.publish(tmp_path / "r", V1))
    OverlayStore(data_dirs).quarantine(V1.overlay_version, "it crashed at boot")

    outcome = ensure_overlay(
        settings,
        data_dirs,
        GPU_REPORT,
        LLAMA_CPP_VERSION,
        probe=layer_probe,
        trusted_keys=[release_keys.public],
    )

    assert outcome.status == "skipped" and "it crashed at boot" in outcome.message
    assert_settled(data_dirs, None)


def test_second_launch_does_not_wait_for_a_running_install(
    releases: ReleaseFactory, release_keys: Keys, data_dirs: DataDirs, tmp_path: Path
) -> None:
    index = releases.publish(tmp_path / "r", V1)
    child = start_installer(data_dirs.home, str(index), [release_keys.public], pause_at="extract")
    child.wait_paused("extract")
    try:
        outcome = ensure_overlay(
            settings_for(data_dirs, release_keys, index),
            data_dirs,
            GPU_REPORT,
            LLAMA_CPP_VERSION,
            probe=layer_probe,
            trusted_keys=[release_keys.public],
        )
    finally:
        child.kill()
    assert outcome.status == "failed" and "another overlay install is running" in outcome.message
    OverlayStore(data_dirs).cleanup_leftovers()
    assert_settled(data_dirs, None)


# -- background jobs -----------------------------------------------------------------------


def installing(dirs: DataDirs, keys: Keys, index: Path, gate: threading.Event | None = None) -> Any:
    """Job work: a real install of `index`, held at its start until `gate` opens."""

    def work(progress: ProgressFn) -> BestInstall:
        if gate is not None:
            assert gate.wait(60)
        installer = Installer(
            dirs, [keys.public], probe=layer_probe, progress=progress, options=FAST_OPTIONS
        )
        return BestInstall("cuda", cuda=installer.install(str(index), TARGET))

    return work


def test_one_job_at_a_time_and_its_progress(
    releases: ReleaseFactory, release_keys: Keys, data_dirs: DataDirs, tmp_path: Path
) -> None:
    index = releases.publish(tmp_path / "r", V1)
    jobs = UpgradeJobs()
    gate = threading.Event()

    job_id = jobs.start(installing(data_dirs, release_keys, index, gate))
    assert jobs.start(installing(data_dirs, release_keys, index)) == job_id
    running = jobs.get(job_id)
    assert running is not None and running["state"] == "running"
    gate.set()
    done = jobs.wait(job_id, timeout=60)

    assert done is not None
    assert {key: done[key] for key in ("state", "phase", "restart_required")} == {
        "state": "succeeded",
        "phase": "done",
        "restart_required": True,
    }
    assert done["bytes_done"] == done["bytes_total"] > 0
    assert V1.overlay_version in done["message"] and "restart" in done["message"]
    again = jobs.start(installing(data_dirs, release_keys, index))
    assert again != job_id
    repeated = jobs.wait(again, timeout=60)
    assert repeated is not None and repeated["state"] == "succeeded"
    assert jobs.get("unknown") is None


def test_failed_job_says_why(data_dirs: DataDirs) -> None:
    jobs = UpgradeJobs()

    def refuse(progress: ProgressFn) -> BestInstall:
        raise ProbeRejected("overlay X was installed but its probe failed: it crashed")

    def explode(progress: ProgressFn) -> BestInstall:
        raise KeyError("surprise")

    failed = jobs.wait(jobs.start(refuse), timeout=60)
    crashed = jobs.wait(jobs.start(explode), timeout=60)

    assert failed is not None and failed["state"] == "failed"
    assert failed["message"].endswith("its probe failed: it crashed")
    assert not failed["restart_required"]
    assert crashed is not None and crashed["state"] == "failed"
    assert crashed["message"] == "internal error: KeyError: 'surprise'"


# -- the API ---------------------------------------------------------------------------------


def boot_state(dirs: DataDirs, keys: Keys, release: Path | None) -> BootState:
    return BootState(
        settings=settings_for(dirs, keys, release),
        dirs=dirs,
        report=GPU_REPORT,
        decision="cpu",
        reason="no overlay installed; upgrade available",
        upgrade_available=True,
        active_variant="cpu",
        overlay_version=None,
        llama_cpp_version=LLAMA_CPP_VERSION,
        llama_cpp_path=dirs.home / "bundle" / "llama_cpp",
        gpu_offload=False,
        n_gpu_layers=0,
        n_threads=1,
        trusted_keys=(keys.public,),
    )


@contextmanager
def served(state: BootState, keys: Keys) -> Iterator[tuple[httpx.Client, FastAPI]]:
    """The upgrade routes (installing with the test probe) served by uvicorn on loopback."""
    app = FastAPI()
    install_error_replies(app)
    app.include_router(router)
    attach(app, state, engine=None)  # type: ignore[arg-type]  # these routes use no engine

    def test_installer(state: BootState, progress: ProgressFn) -> Installer:
        return Installer(
            state.dirs, [keys.public], probe=layer_probe, progress=progress, options=FAST_OPTIONS
        )

    app.dependency_overrides[get_installer_factory] = lambda: test_installer
    listener = bind_listener("127.0.0.1", 0)
    started = threading.Event()
    server = BackendServer(app, listener, started.set)
    thread = threading.Thread(target=server.run_until_stopped, name="upgrade-api", daemon=True)
    thread.start()
    try:
        assert started.wait(60), "the API server did not start"
        with httpx.Client(
            base_url=listening_url(listener), timeout=60, headers=admin_headers(state.dirs.home)
        ) as client:
            yield client, app
    finally:
        server.stop()
        thread.join(60)
        listener.close()


def test_upgrade_endpoint_starts_a_job_and_reports_progress(
    releases: ReleaseFactory, release_keys: Keys, data_dirs: DataDirs, tmp_path: Path
) -> None:
    state = boot_state(data_dirs, release_keys, releases.publish(tmp_path / "r", V1))
    with served(state, release_keys) as (client, app):
        started = client.post("/api/admin/upgrade-gpu")
        assert started.status_code == 202
        job_id = started.json()["job_id"]
        jobs: UpgradeJobs = app.state.upgrade_jobs
        jobs.wait(job_id, timeout=60)

        progress = client.get(f"/api/admin/upgrade-gpu/{job_id}")
        unknown = client.get("/api/admin/upgrade-gpu/nope")

    assert progress.status_code == 200
    body = progress.json()
    assert (body["id"], body["state"], body["phase"]) == (job_id, "succeeded", "done")
    assert body["restart_required"] is True and body["bytes_done"] == body["bytes_total"] > 0
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "upgrade_job_not_found"
    assert_settled(data_dirs, V1.overlay_version)


def test_the_offer_gives_the_download_size_and_fetches_no_archive(
    releases: ReleaseFactory, release_keys: Keys, data_dirs: DataDirs, tmp_path: Path
) -> None:
    state = boot_state(data_dirs, release_keys, releases.publish(tmp_path / "r", V1))
    with served(state, release_keys) as (client, app):
        offer = client.get("/api/admin/upgrade-gpu")
        downloaded = sorted(data_dirs.downloads.glob("*")) if data_dirs.downloads.exists() else []
        job_id = client.post("/api/admin/upgrade-gpu").json()["job_id"]
        app.state.upgrade_jobs.wait(job_id, timeout=60)
        installed = client.get("/api/admin/upgrade-gpu")

    assert offer.status_code == 200, offer.text
    before = offer.json()
    assert (before["overlay_version"], before["active"]) == (V1.overlay_version, False)
    assert before["download_bytes"] > 0 and before["unpacked_bytes"] > 0
    assert downloaded == []
    after = installed.json()
    assert (after["download_bytes"], after["unpacked_bytes"], after["active"]) == (0, 0, True)
    assert_settled(data_dirs, V1.overlay_version)


def test_upgrade_without_release_url_is_409(data_dirs: DataDirs, release_keys: Keys) -> None:
    with served(boot_state(data_dirs, release_keys, None), release_keys) as (client, _):
        reply = client.post("/api/admin/upgrade-gpu")
    assert reply.status_code == 409
    assert "LLAMASHIP_RELEASE_URL" in reply.json()["error"]["message"]


# -- the command line ----------------------------------------------------------------------


def test_cli_install_runs_the_real_probe_and_reports_its_failure(
    hardware: FakeHardware, releases: ReleaseFactory, release_keys: Keys, tmp_path: Path
) -> None:
    """`llamaship overlay install DIR` on a machine with an RTX 3060 and a CUDA 13 driver: the
    test layers hold no real llama.cpp, so the real probe refuses them, and says so."""
    hardware.install_nvml()
    hardware.gpus = [RTX_3060]
    hardware.driver_version, hardware.cuda_version = "580.95.05", 13000
    release = tmp_path / "release"
    releases.publish(release, V1)

    result = hardware.run_cli(
        "overlay",
        "install",
        str(release),
        "--llama-cpp-version",
        LLAMA_CPP_VERSION,
        trust=release_keys.public,
    )

    assert result.returncode == ProbeRejected.exit_code, result.stderr
    assert "[extract]" in result.stderr and "[probe]" in result.stderr
    assert f"overlay {V1.overlay_version} was installed but its probe failed" in result.stderr
    status = hardware.run_cli("overlay", "status", "--json")
    document = json.loads(status.stdout)
    assert document["active"] is None
    assert "its probe failed" in document["quarantined"][V1.overlay_version]
    assert_settled(DataDirs(hardware.home), None)


def test_cli_status_rollback_and_remove(
    releases: ReleaseFactory,
    release_keys: Keys,
    data_dirs: DataDirs,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    v2 = ReleaseSpec(overlay_version="0.3.36-cu13.0-2", serial=2)
    installer = Installer(data_dirs, [release_keys.public], probe=layer_probe, options=FAST_OPTIONS)
    for spec in (V1, v2):
        installer.install(str(releases.publish(tmp_path / spec.overlay_version, spec)), TARGET)
    monkeypatch.setenv("LLAMASHIP_HOME", str(data_dirs.home))

    assert main(["overlay", "status"]) == 0
    assert f"active: {v2.overlay_version} (CUDA 13.0" in capsys.readouterr().out
    assert main(["overlay", "rollback"]) == 0
    assert f"overlay {V1.overlay_version} is active again" in capsys.readouterr().out
    assert main(["overlay", "remove"]) == 0
    assert "the app runs on CPU after a restart" in capsys.readouterr().out
    assert main(["overlay", "status", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["active"] is None
    assert document["previous"]["overlay_version"] == V1.overlay_version
    assert main(["overlay", "remove"]) == 0
    assert "no overlay was active" in capsys.readouterr().out
    assert_settled(data_dirs, None)


def test_cli_rollback_without_previous_exits_with_the_store_error(
    data_dirs: DataDirs,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LLAMASHIP_HOME", str(data_dirs.home))
    assert main(["overlay", "rollback"]) == StoreError.exit_code
    assert "no previous overlay to roll back to" in capsys.readouterr().err

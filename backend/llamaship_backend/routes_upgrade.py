"""`POST /api/admin/upgrade-gpu` (202 + job id) and `GET /api/admin/upgrade-gpu/{job_id}`.

The upgrade runs in a background thread (`llamaship.overlay.jobs.UpgradeJobs`, one per app,
created on first use); the new overlay is used after a restart (`/api/admin/restart`). Both
need the admin token (`security.require_admin`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from llamaship.detect.vulkan_choice import vulkan_device_choice
from llamaship.launch.outcome import BootState
from llamaship.overlay.best import BestInstall, install_best
from llamaship.overlay.install import Installer, ProgressFn
from llamaship.overlay.jobs import UpgradeJobs
from llamaship.overlay.offer import find_offer
from llamaship.overlay.select import NoMatchingOverlay, Target
from llamaship.overlay.vulkan import VulkanInstaller
from llamaship_backend.dependencies import get_boot_state
from llamaship_backend.error_replies import ERROR_RESPONSES
from llamaship_backend.errors import BackendError
from llamaship_backend.schemas import JobStarted, UpgradeJobProgress, UpgradeOffer
from llamaship_backend.security import require_admin
from llamaship_contract.errors import LlamashipError

router = APIRouter(dependencies=[Depends(require_admin)], responses=ERROR_RESPONSES)
_jobs_lock = threading.Lock()

InstallerFactory = Callable[[BootState, ProgressFn], Installer]


class UpgradeNotConfigured(BackendError):
    """No release URL is configured, so there is nothing to upgrade from."""

    status_code = 409
    error_type = "server_error"
    code = "upgrade_not_configured"


class UpgradeUnavailable(BackendError):
    """No CUDA overlay exists for this operating system or processor."""

    status_code = 409
    error_type = "server_error"
    code = "upgrade_unavailable"


class UpgradeJobNotFound(BackendError):
    """The job id is unknown (never started, or forgotten after newer jobs)."""

    status_code = 404
    code = "upgrade_job_not_found"


def get_upgrade_jobs(request: Request) -> UpgradeJobs:
    """The app's job runner, created on first use."""
    with _jobs_lock:
        jobs: UpgradeJobs | None = getattr(request.app.state, "upgrade_jobs", None)
        if jobs is None:
            jobs = UpgradeJobs()
            request.app.state.upgrade_jobs = jobs
        return jobs


def _default_installer(state: BootState, progress: ProgressFn) -> Installer:
    return Installer(state.dirs, state.trusted_keys, progress=progress)


def get_installer_factory() -> InstallerFactory:
    """How an upgrade builds its installer (tests override this dependency to swap the probe)."""
    return _default_installer


def _release_url_and_target(state: BootState) -> tuple[str, Target]:
    release_url = state.settings.release_url
    if release_url is None:
        msg = (
            "No release URL is configured: set LLAMASHIP_RELEASE_URL to the overlay's "
            "releases.json."
        )
        raise UpgradeNotConfigured(msg)
    choice = vulkan_device_choice(state.report, state.settings)
    try:
        return release_url, Target.current(
            state.report, state.llama_cpp_version, vulkan_device=choice.device_index
        )
    except NoMatchingOverlay as error:
        raise UpgradeUnavailable(str(error)) from None


@router.get("/api/admin/upgrade-gpu")
def upgrade_offer(state: Annotated[BootState, Depends(get_boot_state)]) -> UpgradeOffer:
    """The overlay an upgrade would install and its download size (the signed index and
    manifests are read and verified; no archive is fetched)."""
    release_url, target = _release_url_and_target(state)
    try:
        offer = find_offer(state.dirs, state.trusted_keys, release_url, target)
    except LlamashipError as error:
        raise UpgradeUnavailable(str(error)) from None
    return UpgradeOffer(
        overlay_version=offer.overlay_version,
        kind=offer.kind,
        cuda_version=offer.cuda_version,
        download_bytes=offer.download_bytes,
        unpacked_bytes=offer.unpacked_bytes,
        active=offer.active,
        running_overlay_version=state.overlay_version,
    )


@router.post("/api/admin/upgrade-gpu", status_code=202)
def start_upgrade(
    state: Annotated[BootState, Depends(get_boot_state)],
    jobs: Annotated[UpgradeJobs, Depends(get_upgrade_jobs)],
    make_installer: Annotated[InstallerFactory, Depends(get_installer_factory)],
) -> JobStarted:
    """Start installing the best overlay for this machine (CUDA first, then Vulkan, by the
    rule); poll the returned job id. While an upgrade runs, this returns the running job's id.
    """
    release_url, target = _release_url_and_target(state)
    choice = vulkan_device_choice(state.report, state.settings)

    def work(progress: ProgressFn) -> BestInstall:
        vulkan = VulkanInstaller(state.dirs, state.trusted_keys, choice=choice, progress=progress)
        return install_best(
            release_url, target, cuda=make_installer(state, progress), vulkan=vulkan
        )

    return JobStarted(job_id=jobs.start(work, running_overlay_version=state.overlay_version))


@router.get("/api/admin/upgrade-gpu/{job_id}")
def upgrade_progress(
    job_id: str,
    jobs: Annotated[UpgradeJobs, Depends(get_upgrade_jobs)],
) -> UpgradeJobProgress:
    """The job's state, phase, downloaded bytes, message and whether a restart is needed."""
    progress = jobs.get(job_id)
    if progress is None:
        msg = f"No upgrade job {job_id!r}: start one with POST /api/admin/upgrade-gpu."
        raise UpgradeJobNotFound(msg)
    return UpgradeJobProgress.model_validate(progress)

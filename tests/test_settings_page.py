"""The settings page (`/settings`): what it is served with, and a real browser going through it.

The browser test drives Debian's chromium with Playwright against `llamaship serve` in a child
process on a fake machine with an RTX 2080 and a CUDA 13 driver (fake NVML, no libcuda): the
page shows the GPU, the consent leads to an upgrade from a loopback release server serving the
real fixture overlay, the restart brings the page back with the new state, then a model is
downloaded from a loopback server, served at once and benchmarked. It saves the screenshots in
docs/img/.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fixtures_backend import RunningBackend
from fixtures_overlay import OVERLAY_VERSION
from fixtures_release import Release
from hardware.fakes import FakeHardware
from llamaship_backend.routes_page import CONTENT_SECURITY_POLICY
from llamaship_contract.document import dump_document_pretty
from llamaship_contract.names import ADMIN_TOKEN_NAME
from models_kit import GEMMA_FILE, Gemma, ModelServer
from overlay_kit.server import OverlayServer, serving

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / "docs" / "img"
CATALOGUE_CLI = Path(__file__).resolve().parent / "catalogue_cli.py"
TOKEN = "ab" * 32


# -- what the server sends -----------------------------------------------------------------


def test_the_page_and_its_files_come_with_a_strict_policy_and_no_token(start_backend: Any) -> None:
    backend: RunningBackend = start_backend()
    with backend.client() as client:
        replies = {
            path: client.get(path)
            for path in ("/settings", "/settings/settings.js", "/settings/settings.css")
        }
        token = (backend.state.dirs.home / ADMIN_TOKEN_NAME).read_text()
        framed = client.get("/settings", headers={"Origin": "http://evil.example"})
    for path, reply in replies.items():
        assert reply.status_code == 200, path
        assert reply.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert reply.headers["x-frame-options"] == "DENY"
        assert token not in reply.text, path
    policy = CONTENT_SECURITY_POLICY
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and "http" not in policy
    html = replies["/settings"].text
    assert replies["/settings"].headers["content-type"].startswith("text/html")
    assert replies["/settings/settings.js"].headers["content-type"].startswith("text/javascript")
    assert "<script>" not in html, "no inline script"
    assert not re.search(r"\son[a-z]+=", html), "no event handler attributes"
    assert re.findall(r'(?:src|href)="([^"]+)"', html) == [
        "/settings/settings.css",
        "/settings/settings.js",
    ]
    assert framed.status_code == 403


# -- a real browser --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Backend:
    """`llamaship serve` (trusting the release key, with the test catalogue) on a fixed port,
    so the page finds it again after an exec restart."""

    def __init__(
        self, machine: FakeHardware, release: Release, release_url: str, catalogue: Path, log: Path
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = machine.env(
            LLAMASHIP_PORT=str(self.port),
            LLAMASHIP_RELEASE_URL=release_url,
            LLAMACPP_N_THREADS="1",
            LLAMASHIP_N_CTX="1024",
        )
        self.log = log
        with log.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, str(CATALOGUE_CLI), release.public_key, str(catalogue), "serve"],
                cwd=machine.root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=subprocess.STDOUT,
            )
        self.wait_healthy()
        self.token = (machine.home / ADMIN_TOKEN_NAME).read_text()

    def wait_healthy(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}/api/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the backend did not answer:\n{self.log.read_text()}")

    def capabilities(self) -> dict[str, Any]:
        reply: dict[str, Any] = httpx.get(f"{self.url}/api/capabilities", timeout=30).json()
        return reply

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def release_server(overlay_release: Release) -> Iterator[OverlayServer]:
    """The fixture overlay's release (both layers and the signed index) on loopback HTTP."""
    with serving(OverlayServer(overlay_release.directory), "release-server") as server:
        yield server


def watch(page: Any, *element_ids: str) -> None:
    """Record every text the page puts in these elements (read back with `seen`)."""
    page.evaluate(
        """ids => {
        window.seenTexts = window.seenTexts || {};
        for (const id of ids) {
            const element = document.getElementById(id);
            window.seenTexts[id] = [];
            new MutationObserver(() => window.seenTexts[id].push(element.textContent))
                .observe(element, {childList: true, characterData: true, subtree: true});
        }
    }""",
        list(element_ids),
    )


def seen(page: Any, element_id: str) -> list[str]:
    texts: list[str] = page.evaluate("id => window.seenTexts[id]", element_id)
    return texts


def assert_page_shows(page: Any, caps: dict[str, Any]) -> None:
    """The facts section says what /api/capabilities says, CUDA active exactly when it is."""
    active = caps["llama_cpp"]["variant"] == "cuda" and caps["llama_cpp"]["gpu_offload"]
    cell = page.locator("#cuda-active")
    assert cell.get_attribute("data-active") == str(active).lower()
    assert cell.inner_text().startswith("Yes" if active else "No")
    assert page.locator("#decision-reason").inner_text() == caps["decision"]["reason"]
    running, installed = caps["overlay"]["version"], caps["overlay"]["installed"]
    shown = page.locator("#overlay-version").inner_text()
    if running:
        assert shown == f"{running} installed, in use"
    elif installed:
        assert shown == f'{installed} installed, not in use (see "Why")'
    else:
        assert shown == "none"


@pytest.mark.slow
def test_settings_page_in_a_browser(
    gpu_machine: FakeHardware,
    overlay_release: Release,
    release_server: OverlayServer,
    gemma: Gemma,
    model_server: ModelServer,
    browser_page: Any,
    tmp_path: Path,
) -> None:
    catalogue = tmp_path / "catalogue.json"
    catalogue.write_bytes(dump_document_pretty(gemma.catalogue(model_server.url)))
    backend = Backend(
        gpu_machine,
        overlay_release,
        f"{release_server.url}releases.json",
        catalogue,
        tmp_path / "backend.log",
    )
    page = browser_page
    try:
        before = backend.capabilities()
        assert before["decision"]["upgrade_available"] is True, before["decision"]
        page.goto(f"{backend.url}/settings#token={backend.token}")
        page.wait_for_selector("body[data-loaded=true]")
        # The token left the address bar; the page holds it for this tab only.
        assert "token" not in page.url
        assert page.evaluate("sessionStorage.getItem('llamaship-admin-token')") == backend.token
        assert "NVIDIA GeForce RTX 2080" in page.locator("#gpu-name").inner_text()
        assert page.locator("#gpu-vram").inner_text() == "8.0 GiB (7.7 GiB free)"
        assert page.locator("#gpu-driver").inner_text().startswith("580.95.05")
        assert_page_shows(page, before)
        size = page.locator("#upgrade-size")
        size.filter(has_text=re.compile(r"MB on disk")).wait_for()  # not "checking…"
        assert re.fullmatch(
            r"Download size: [0-9.]+ MB \([0-9.]+ MB on disk\)", size.inner_text()
        ), size.inner_text()
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "settings-before-upgrade.png"), full_page=True)

        # Consent, then the upgrade with its progress, then the restart button. The layers come
        # at about 20 MB/s: on loopback the download would end between two polls of the page.
        for archive in release_server.root.glob("*.tar.zst"):
            release_server.inject(archive.name, "paced", forever=True)
        watch(page, "upgrade-message")
        page.get_by_role("button", name="Enable").click()
        page.locator("#restart").wait_for(state="visible", timeout=300_000)
        messages = seen(page, "upgrade-message")
        phases = {text.split(":")[0] for text in messages}
        assert {"download", "probe"} <= phases, messages
        bar = page.locator("#upgrade-progress")
        assert float(bar.get_attribute("value") or 0) == float(bar.get_attribute("max") or 0) > 1
        settings = httpx.get(f"{backend.url}/api/settings", timeout=30).json()["settings"]
        assert settings["gpu_upgrade_consent"] == "enable"

        pid = backend.process.pid
        page.get_by_role("button", name="Restart now").click()
        page.locator("#notice").filter(has_text="Restarted.").wait_for(timeout=180_000)
        assert backend.process.poll() is None and backend.process.pid == pid  # exec: same pid
        after = backend.capabilities()
        assert after["overlay"]["installed"] == OVERLAY_VERSION, backend.log.read_text()
        assert_page_shows(page, after)
        page.screenshot(path=str(SCREENSHOTS / "settings-after-upgrade.png"), full_page=True)

        # A model download with progress, verified and in use at once (no restart).
        page.locator("#model-select").select_option("gemma3-270m")
        watch(page, "model-message")
        page.locator("#model-pull").click()
        page.locator("#model-message").filter(has_text="is verified and in use").wait_for(
            timeout=300_000
        )
        percents = [
            int(match[1])
            for text in seen(page, "model-message")
            if (match := re.search(r"\((\d+) %\)", text))
        ]
        assert percents and min(percents) < 100, seen(page, "model-message")
        page.locator("#model-serving").filter(has_text=GEMMA_FILE).wait_for(timeout=180_000)
        assert page.locator("#restart").is_hidden()

        # The benchmark: tokens/s and the speed-up over CPU.
        page.get_by_role("button", name="Run benchmark").click()
        page.locator("#bench-result").wait_for(state="visible", timeout=600_000)
        tokens_per_second = page.locator("#bench-tps").inner_text()
        assert re.fullmatch(r"[0-9]+\.[0-9] tokens/s", tokens_per_second)
        assert float(tokens_per_second.split()[0]) > 0
        assert "×" in page.locator("#bench-speedup").inner_text()
        measured = backend.capabilities()["benchmark"]
        assert measured is not None
        assert page.locator("#bench-summary").inner_text() == measured["summary"]
        page.screenshot(path=str(tmp_path / "settings-benchmark.png"), full_page=True)
    finally:
        backend.stop()

"""The first run as a user meets it, in a real browser: a fresh LLAMASHIP_HOME, `llamaship
serve` prints the settings page's address with its token, the page's one button downloads the
default chat model from the hub on loopback (its CDN on another host name), verifies it against
the hub's sha256 and serves it; then the first token is generated. The time each step took is
written to `first-run.json` beside the test's files (and printed with -s)."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hardware.fakes import FakeHardware
from hub_kit import LoopbackHub, loopback_hub
from llamaship.models.store import ModelStore
from models_kit import Gemma
from terminal_kit import on_a_terminal

DEFAULT_CHAT = ModelStore(Path("/nonexistent")).default_chat()
PAGE_LINE = re.compile(r"settings page \(keep this address private\): (http://\S+#token=\w+)")


@pytest.fixture
def site(tmp_path: Path, gemma: Gemma) -> Iterator[LoopbackHub]:
    www = tmp_path / "www"
    www.mkdir()
    (www / DEFAULT_CHAT.file_name).symlink_to(gemma.path)
    with loopback_hub(www) as site:
        site.hub.publish(DEFAULT_CHAT.file_name, gemma.sha256, gemma.size)
        yield site


def first_token_seconds(base: str) -> float:
    """Seconds until the first content chunk of a streamed chat completion."""
    started = time.monotonic()
    body = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8, "stream": True}
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=300) as reply:
        assert reply.status_code == 200, reply.read()
        for line in reply.iter_lines():
            if line.startswith("data: {"):
                delta = json.loads(line[6:])["choices"][0].get("delta", {})
                if delta.get("content"):
                    return time.monotonic() - started
    raise AssertionError("no token was generated")


@pytest.mark.slow
def test_first_token_from_a_fresh_home_through_the_page(
    hardware: FakeHardware,
    site: LoopbackHub,
    browser_page: Any,
    tmp_path: Path,
) -> None:
    page = browser_page
    env = hardware.env(
        LLAMASHIP_PORT="0",
        LLAMASHIP_HUB_URL=site.hub.url,
        LLAMASHIP_HUB_ALLOW_HTTP="true",
        LLAMACPP_N_THREADS="1",
        LLAMASHIP_N_CTX="512",
    )
    assert not hardware.home.exists() or not any(hardware.home.iterdir())
    started = time.monotonic()
    command = [sys.executable, "-m", "llamaship_backend", "serve"]
    with on_a_terminal(command, env, tmp_path) as terminal:  # as a person starts it
        url = terminal.read_until(PAGE_LINE)[1]
        listening = time.monotonic()
        page.goto(url)
        page.wait_for_selector("body[data-loaded=true]")
        assert "token" not in page.url
        quick = page.locator("#model-quick-button")
        assert DEFAULT_CHAT.name in page.locator("#model-quick-text").inner_text()
        clicked = time.monotonic()
        quick.click()
        page.locator("#model-message").filter(has_text="is verified and in use").wait_for(
            timeout=600_000
        )
        in_use = time.monotonic()
        assert page.locator("#model-serving").inner_text() == DEFAULT_CHAT.file_name
        base = url.split("/settings", 1)[0]
        token_s = first_token_seconds(base)
        done = time.monotonic()
    timings = {
        "start_to_page_address_s": round(listening - started, 2),
        "page_open_s": round(clicked - listening, 2),
        "click_to_model_in_use_s": round(in_use - clicked, 2),
        "first_token_s": round(token_s, 2),
        "fresh_home_to_first_token_s": round(done - started, 2),
        "model_bytes": DEFAULT_CHAT.size or site.hub.published[DEFAULT_CHAT.file_name].size,
    }
    (tmp_path / "first-run.json").write_text(json.dumps(timings, indent=2))
    print("first run:", json.dumps(timings))
    assert site.hub.heads and [r.path for r in site.cdn.requests] == [DEFAULT_CHAT.file_name]

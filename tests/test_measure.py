"""The measured variant choice: the rule, the cache, and real measurement children.

The children are this program's `measure-variant` command running the real compiled llama.cpp
on a tiny generated GGUF. The "GPU" side is the CPU build under a GPU variant's environment
(no layers offloaded), or a Vulkan setup whose backend module does not exist (the child must
refuse to report CPU numbers as Vulkan's). The real Vulkan variant on lavapipe, with the layer's
module, is measured in the frozen bundle (tests/test_bundle_vulkan_overlay.py).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from fixtures_backend import no_gpu_boot_state, serving
from llamaship.io.fs import atomic_write_bytes
from llamaship.measure.cache import MeasurementCache, cache_key, model_identity
from llamaship.measure.job import MeasurementJob
from llamaship.measure.run import (
    CPU_SETUP,
    MeasurementFailed,
    MeasureRequest,
    VariantSetup,
    cuda_setup,
    measure_variant,
    vulkan_setup,
)
from llamaship.measure.verdict import GENERATION_MARGIN, choose, judge_speeds
from llamaship.paths import DataDirs
from llamaship_build.gguf_models import Shape, write_llama_gguf
from llamaship_contract.document import dump_document_pretty
from llamaship_contract.measure import VariantMeasurement, VariantSpeed
from llamaship_contract.names import ADMIN_TOKEN_NAME

# The CPU build under a GPU variant's name and environment, no layers offloaded.
CPU_AS_VULKAN = VariantSetup("vulkan", 0, set_env={"GGML_VK_VISIBLE_DEVICES": "0"})


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("models")
    return write_llama_gguf(directory / "tiny.gguf", Shape())


def speed(variant: str, pp: float, tg: float) -> VariantSpeed:
    return VariantSpeed.model_validate(
        {
            "variant": variant,
            "n_gpu_layers": 0 if variant == "cpu" else -1,
            "load_seconds": 0.1,
            "prompt_tokens": 128,
            "prompt_tokens_per_second": pp,
            "generated_tokens": 64,
            "tokens_per_second": tg,
        }
    )


def measurement(
    model: Path, *, faster: bool, driver: str = "mesa 25.0.7", variant: str = "vulkan"
) -> VariantMeasurement:
    gpu, cpu = (speed(variant, 900, 40), speed("cpu", 300, 12))
    if not faster:
        gpu, cpu = (speed(variant, 40, 1.9), speed("cpu", 300, 14.9))
    return VariantMeasurement.model_validate(
        {
            "model": model_identity(model),
            "variant": variant,
            "driver": driver,
            "gpu": gpu,
            "cpu": cpu,
            "faster": judge_speeds(gpu, cpu)[0],
            "reason": judge_speeds(gpu, cpu)[1],
            "measured_at": "2026-12-07T08:00:00+00:00",
            "seconds": 12.5,
        }
    )


# -- the rule ------------------------------------------------------------------------------


def test_a_gpu_faster_in_generation_and_prompts_is_faster() -> None:
    faster, reason = judge_speeds(speed("vulkan", 900, 40), speed("cpu", 300, 12))
    assert faster
    assert reason == (
        "vulkan measured faster: generation 40.0 against 12.0 tokens/s, "
        "prompt 900.0 against 300.0 tokens/s on the CPU build"
    )


@pytest.mark.parametrize(
    ("gpu_pp", "gpu_tg", "why"),
    [
        (40, 1.9, "slower in both"),
        (900, 12 * GENERATION_MARGIN * 0.99, "generation within the margin"),
        (299, 40, "prompt processing slower"),
    ],
)
def test_a_gpu_not_clearly_faster_loses_to_the_cpu(gpu_pp: float, gpu_tg: float, why: str) -> None:
    faster, reason = judge_speeds(speed("vulkan", gpu_pp, gpu_tg), speed("cpu", 300, 12))
    assert not faster, why
    assert "running on the CPU build" in reason
    assert "LLAMASHIP_VARIANT_CHOICE=gpu" in reason
    assert f"generation {gpu_tg:.1f} against 12.0 tokens/s" in reason
    assert "\n" not in reason


def test_the_choice_follows_the_measurement_and_the_override(tmp_path: Path) -> None:
    model = write_llama_gguf(tmp_path / "m.gguf", Shape())
    slower, faster = measurement(model, faster=False), measurement(model, faster=True)
    # The compatibility rule chose the CPU: nothing to measure, its reason stands.
    assert choose("cpu", "measured", has_model=True, measurement=None) == choose(
        "cpu", "gpu", has_model=True, measurement=slower
    )
    assert choose("cpu", "gpu", has_model=True, measurement=None).variant == "cpu"
    # Unmeasured: the rule's variant runs and is measured once the server is up.
    unmeasured = choose("vulkan", "measured", has_model=True, measurement=None)
    assert (unmeasured.variant, unmeasured.reason, unmeasured.measure) == ("vulkan", None, True)
    # No model: nothing to measure, the rule's choice stands.
    no_model = choose("vulkan", "measured", has_model=False, measurement=None)
    assert (no_model.variant, no_model.measure) == ("vulkan", False)
    # Measured: the faster one runs, the reason has the numbers.
    ran_slower = choose("vulkan", "measured", has_model=True, measurement=slower)
    assert (ran_slower.variant, ran_slower.reason, ran_slower.measure) == (
        "cpu",
        slower.reason,
        False,
    )
    assert "generation 1.9 against 14.9 tokens/s" in slower.reason
    assert choose("vulkan", "measured", has_model=True, measurement=faster).variant == "vulkan"
    # The user overrides either way.
    forced_gpu = choose("vulkan", "gpu", has_model=True, measurement=slower)
    assert (forced_gpu.variant, forced_gpu.measure) == ("vulkan", False)
    assert forced_gpu.reason == "LLAMASHIP_VARIANT_CHOICE=gpu: running vulkan, unmeasured"
    forced_cpu = choose("cuda", "cpu", has_model=True, measurement=None)
    assert (forced_cpu.variant, forced_cpu.measure) == ("cpu", False)


def test_the_choice_setting_is_checked() -> None:
    from llamaship.config import resolve_settings
    from llamaship.errors import ConfigError

    assert resolve_settings(env={}).variant_choice == "measured"
    assert resolve_settings(env={"LLAMASHIP_VARIANT_CHOICE": " GPU "}).variant_choice == "gpu"
    with pytest.raises(ConfigError, match=r"LLAMASHIP_VARIANT_CHOICE.*'measured'"):
        resolve_settings(env={"LLAMASHIP_VARIANT_CHOICE": "fastest"})


# -- the cache -----------------------------------------------------------------------------


def test_the_cache_is_keyed_by_model_variant_and_driver(tmp_path: Path) -> None:
    model = write_llama_gguf(tmp_path / "m.gguf", Shape())
    cache = MeasurementCache(DataDirs(tmp_path / "home"))
    identity = model_identity(model)
    saved = measurement(model, faster=True)
    path = cache.save(saved)
    assert path.parent == tmp_path / "home" / "state" / "measurements"
    assert cache.load(identity, "vulkan", "mesa 25.0.7") == saved
    assert cache.load(identity, "vulkan", "mesa 25.1.0") is None
    assert cache.load(identity, "cuda", "mesa 25.0.7") is None
    assert len({cache_key(identity, "vulkan", driver) for driver in ("a", "b", "a ")}) == 3

    # The same file moved keeps its measurement; a changed file is measured again.
    moved = model.rename(tmp_path / "moved.gguf")
    assert cache.load(model_identity(moved), "vulkan", "mesa 25.0.7") == saved
    stat = moved.stat()
    with moved.open("r+b") as handle:  # the same size and mtime, other bytes in the first MiB
        handle.seek(200)
        handle.write(b"\xff" * 8)
    os.utime(moved, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert cache.load(model_identity(moved), "vulkan", "mesa 25.0.7") is None


def test_an_unreadable_or_misplaced_cache_file_is_measured_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = write_llama_gguf(tmp_path / "first.gguf", Shape())
    second = write_llama_gguf(tmp_path / "second.gguf", Shape(n_layer=1))
    cache = MeasurementCache(DataDirs(tmp_path / "home"))
    path = cache.path(model_identity(first), "vulkan", "d")
    atomic_write_bytes(path, b"{not json")
    assert cache.load(model_identity(first), "vulkan", "d") is None
    # Another model's document under this model's name.
    atomic_write_bytes(path, dump_document_pretty(measurement(second, faster=True, driver="d")))
    assert cache.load(model_identity(first), "vulkan", "d") is None
    assert "of another model or driver" in caplog.text


# -- real children -------------------------------------------------------------------------


def test_a_real_measurement_of_two_environments(tiny_model: Path, tmp_path: Path) -> None:
    progress: list[tuple[float, str]] = []
    request = MeasureRequest(tiny_model, CPU_AS_VULKAN, driver="test driver", n_threads=1)
    started = time.monotonic()
    result = measure_variant(request, on_progress=lambda f, m: progress.append((f, m)))
    took = time.monotonic() - started
    print(f"measurement of {tiny_model.name}: {took:.2f} s; {result.reason}")
    assert (result.variant, result.driver) == ("vulkan", "test driver")
    assert result.model == model_identity(tiny_model)
    assert (result.gpu.variant, result.cpu.variant) == ("vulkan", "cpu")
    for run in (result.gpu, result.cpu):
        assert run.n_gpu_layers == 0
        assert run.prompt_tokens == 128 and run.generated_tokens >= 1
        assert run.prompt_tokens_per_second > 0 and run.tokens_per_second > 0
    assert result.faster == judge_speeds(result.gpu, result.cpu)[0]
    assert result.reason == judge_speeds(result.gpu, result.cpu)[1]
    assert [fraction for fraction, _ in progress] == [0.0, 0.5, 1.0]
    assert progress[0][1] == "measuring vulkan (1/2) on tiny.gguf"
    assert progress[1][1] == "measuring cpu (2/2) on tiny.gguf"


def test_a_gpu_variant_whose_backend_does_not_load_fails_in_one_line(
    tiny_model: Path, tmp_path: Path
) -> None:
    """GGML_BACKEND_PATH reaches ggml in the child: a missing module registers no device, and
    the child refuses to report the CPU's numbers as Vulkan's."""
    missing = tmp_path / "libggml-vulkan.so"
    request = MeasureRequest(tiny_model, vulkan_setup(missing, 0), driver="d", n_threads=1)
    with pytest.raises(MeasurementFailed) as caught:
        measure_variant(request)
    message = str(caught.value)
    assert message == (
        "the vulkan run failed (exit 1): llamaship: error: the vulkan backend registered no "
        "GPU device (devices: CPU)"
    )


def test_the_cpu_variant_drops_the_gpu_backend_setting() -> None:
    env = {"GGML_BACKEND_PATH": "/x/libggml-vulkan.so", "GGML_VK_VISIBLE_DEVICES": "0", "A": "1"}
    assert CPU_SETUP.environment(env) == {"A": "1"}
    assert vulkan_setup(Path("/v.so"), 1).environment({"A": "1"}) == {
        "A": "1",
        "GGML_BACKEND_PATH": "/v.so",
        "GGML_VK_VISIBLE_DEVICES": "1",
    }


def test_the_cuda_variant_names_the_module_and_its_runtime(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Like Vulkan, the bundle's llama.cpp with the module; the runtime's folder first on the
    loader's search path (no Vulkan device list)."""
    monkeypatch.setenv("LD_LIBRARY_PATH", "/app/_internal")
    setup = cuda_setup(Path("/l/backends/libggml-cuda.so"), Path("/r/lib"))
    assert setup.environment({"GGML_VK_VISIBLE_DEVICES": "0", "A": "1"}) == {
        "A": "1",
        "GGML_BACKEND_PATH": "/l/backends/libggml-cuda.so",
        "LD_LIBRARY_PATH": "/r/lib:/app/_internal",
    }
    assert CPU_SETUP.environment(setup.environment({})) == {
        "LD_LIBRARY_PATH": "/r/lib:/app/_internal"
    }


def test_a_child_past_the_time_bound_is_killed_and_the_job_fails_in_one_line(
    tiny_model: Path, tmp_path: Path
) -> None:
    children: list[subprocess.Popen[bytes]] = []
    request = MeasureRequest(tiny_model, CPU_AS_VULKAN, driver="d", n_threads=1, total_seconds=0.2)
    job = MeasurementJob(request, DataDirs(tmp_path / "home"), "vulkan")
    done: list[VariantMeasurement | None] = []
    with pytest.raises(MeasurementFailed, match=r"^the vulkan run did not finish within 0\.1 s"):
        measure_variant(request, on_child=children.append)
    assert job.start(done.append)
    job.join(30)
    status = job.status()
    assert (status.state, status.result, done) == ("failed", None, [None])
    assert status.message == "the vulkan run did not finish within 0.1 s and was stopped"
    assert not (tmp_path / "home" / "state" / "measurements").exists()
    for child in children:
        assert child.poll() is not None
        with pytest.raises(ProcessLookupError):
            os.killpg(child.pid, 0)


def test_the_job_caches_its_result_and_advises_a_restart(tiny_model: Path, tmp_path: Path) -> None:
    dirs = DataDirs(tmp_path / "home")
    request = MeasureRequest(tiny_model, CPU_AS_VULKAN, driver="d", n_threads=1)
    job = MeasurementJob(request, dirs, "vulkan")
    assert job.status().state == "idle"
    done: list[VariantMeasurement | None] = []
    assert job.start(done.append)
    assert not job.start()
    job.join(60)
    status = job.status()
    assert status.state == "done" and status.progress == 1.0
    assert done == [status.result] and status.result is not None
    assert status.message == status.result.reason
    assert MeasurementCache(dirs).load(model_identity(tiny_model), "vulkan", "d") == status.result
    following = "vulkan" if status.result.faster else "cpu"
    assert (status.next_variant, status.restart_advised) == (following, following != "vulkan")
    # The next launch shows the cached result it followed; nothing to restart for.
    cached = MeasurementJob(None, dirs, following, cached=status.result).status()
    assert (cached.state, cached.result, cached.restart_advised) == ("done", status.result, False)


def test_the_server_measures_once_up_and_capabilities_show_it(
    tiny_model: Path, tmp_path: Path
) -> None:
    state = dataclasses.replace(
        no_gpu_boot_state(tmp_path / "home"),
        measure=MeasureRequest(tiny_model, CPU_AS_VULKAN, driver="d", n_threads=1),
    )
    seen: list[str] = []
    with serving(state) as backend, httpx.Client(base_url=backend.url, timeout=30) as client:
        deadline = time.monotonic() + 90
        while True:
            reply = client.get("/api/capabilities")
            assert reply.status_code == 200
            measured = reply.json()["measurement"]
            seen.append(measured["state"])
            if measured["state"] in {"done", "failed"} or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert measured["state"] == "done", measured["message"]
    result = measured["result"]
    assert result["variant"] == "vulkan" and result["cpu"]["variant"] == "cpu"
    # This launch runs the CPU build: a restart changes nothing unless vulkan was faster.
    assert measured["restart_advised"] == result["faster"]
    assert "idle" not in seen


def test_the_child_command_refuses_a_bad_model_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing.gguf"
    arguments = ["--variant", "cpu", "--model", str(missing), "--n-gpu-layers", "0"]
    arguments += ["--n-threads", "1", "--n-prompt", "8", "--n-gen", "8"]
    child = subprocess.run(
        [
            sys.executable,
            "-m",
            "llamaship",
            "measure-variant",
            *arguments,
            "--generation-seconds",
            "1",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert child.returncode == 2
    assert child.stderr.strip().splitlines() == [
        f"llamaship: error: The model file {missing} does not exist: pass --model PATH.gguf "
        "or set LLAMASHIP_MODEL (or leave both empty for `serve`)."
    ]


def test_the_page_shows_the_result_and_offers_the_restart(
    tiny_model: Path,
    tmp_path: Path,
    browser_page: Any,
) -> None:
    """A launch running cuda that followed no measurement, now measured slower: the page says
    why with the numbers and offers the restart onto the CPU build."""
    slower = measurement(tiny_model, faster=False, variant="cuda")
    state = dataclasses.replace(
        no_gpu_boot_state(tmp_path / "home"), active_variant="cuda", measurement=slower
    )
    with serving(state) as backend:
        token = (backend.state.dirs.home / ADMIN_TOKEN_NAME).read_text()
        page = browser_page
        page.goto(f"{backend.url}/settings#token={token}")
        page.wait_for_selector("body[data-loaded=true]")
        assert page.locator("#measure").is_visible()
        assert page.locator("#measure-message").inner_text() == slower.reason
        assert page.locator("#measure-progress").is_hidden()
        assert page.locator("#restart").is_visible()
        assert page.locator("#restart-why").inner_text() == (
            "Restart the app to run the CPU build, as measured above."
        )
        assert page.get_by_role("button", name="Restart now").is_enabled()
        page.screenshot(path=str(tmp_path / "measured.png"), full_page=True)


def test_the_launch_choice_reads_the_cache_for_the_model_and_driver(
    tiny_model: Path, tmp_path: Path
) -> None:
    from llamaship.config import resolve_settings
    from llamaship.measure.choice import measured_choice

    home = tmp_path / "home"
    dirs = DataDirs(home)
    setup = vulkan_setup(tmp_path / "libggml-vulkan.so", 0)

    def choice(driver: str = "d", **env: str) -> Any:
        settings = resolve_settings(
            env={"LLAMASHIP_HOME": str(home), "LLAMASHIP_MODEL": str(tiny_model), **env}
        )
        return measured_choice(settings, dirs, setup, driver, n_threads=3)

    first = choice()
    assert (first.variant, first.reason, first.measurement) == ("vulkan", None, None)
    assert first.measure == MeasureRequest(tiny_model, setup, "d", 3)
    slower = measurement(tiny_model, faster=False, driver="d")
    MeasurementCache(dirs).save(slower)
    after = choice()
    assert (after.variant, after.reason, after.measure, after.measurement) == (
        "cpu",
        slower.reason,
        None,
        slower,
    )
    assert choice(driver="a newer driver").measure is not None
    assert choice(LLAMASHIP_VARIANT_CHOICE="gpu").variant == "vulkan"
    assert choice(LLAMASHIP_VARIANT_CHOICE="cpu").variant == "cpu"
    unreadable = choice(LLAMASHIP_MODEL=str(tmp_path / "missing.gguf"))
    assert (unreadable.variant, unreadable.measure) == ("vulkan", None)
    assert measured_choice(resolve_settings(env={}), dirs, None, "d", 1).variant == "cpu"


@pytest.mark.parametrize(
    ("program", "message"),
    [
        (
            "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)",
            "the vulkan run crashed (SIGSEGV)",
        ),
        ("print('llama.cpp said hello')", "the vulkan run printed no result (last line: "),
        ('print(\'{"variant": "vulkan"}\')', "the vulkan run printed no result (last line: "),
    ],
    ids=["crash", "no-json", "not-a-speed"],
)
def test_a_child_that_crashes_or_prints_no_result_fails_in_one_line(
    tiny_model: Path, program: str, message: str
) -> None:
    """A stand-in for the child (the parent's handling of what a native crash leaves)."""
    request = MeasureRequest(tiny_model, CPU_AS_VULKAN, driver="d", n_threads=1)
    with pytest.raises(MeasurementFailed) as caught:
        measure_variant(request, command=[sys.executable, "-c", program])
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)

"""The overlay install pipeline on real signed releases, over real HTTP on loopback."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from llamaship.launch.probe import run_probe
from llamaship.overlay.install import Installer, InstallProgress, ProgressFn
from llamaship.overlay.store import OverlayStore
from llamaship.paths import DataDirs
from llamaship_build.release_index import write_release_index
from llamaship_contract.launch import ProbeResult
from overlay_kit.checks import assert_settled
from overlay_kit.probe import layer_probe
from overlay_kit.releases import (
    FAST_OPTIONS,
    LLAMA_CPP_VERSION,
    TARGET,
    Keys,
    ReleaseFactory,
    ReleaseSpec,
    llama_files,
)
from overlay_kit.server import OverlayServer

if TYPE_CHECKING:
    from fixtures_overlay import BuiltOverlay

V1 = ReleaseSpec(overlay_version="0.3.36-cu13.0-1", serial=1)
V2 = ReleaseSpec(
    overlay_version="0.3.37-cu13.0-2",
    serial=2,
    llama_cpp_version="0.3.37",
    llama=llama_files("0.3.37-cu13.0-2"),
)


def installer(dirs: DataDirs, keys: Keys, progress: ProgressFn | None = None) -> Installer:
    return Installer(
        dirs, [keys.public], probe=layer_probe, progress=progress, options=FAST_OPTIONS
    )


def test_install_over_http_activates_the_verified_probed_overlay(
    overlay_server: OverlayServer, releases: ReleaseFactory, release_keys: Keys, data_dirs: DataDirs
) -> None:
    releases.publish(overlay_server.root, V1)
    seen: list[InstallProgress] = []

    result = installer(data_dirs, release_keys, progress=seen.append).install(
        overlay_server.url + "releases.json", TARGET
    )

    assert result.changed and len(result.fetched_layers) == 2
    active = OverlayStore(data_dirs).active()
    assert active is not None and active.overlay_version == V1.overlay_version
    assert active.llama_cpp_version == LLAMA_CPP_VERSION
    assert active.module.name == "libggml-cuda.so" and active.module.parent.name == "backends"
    assert active.module.read_bytes() == llama_files(V1.overlay_version)["backends/libggml-cuda.so"]
    assert (
        active.runtime_lib_dir / "libcudart.so"
    ).resolve() == active.runtime_lib_dir / "libcudart.so.13"
    assert active.requirements.cuda_archs == ("75",)
    phases = [progress.phase for progress in seen]
    assert phases[0] == "index" and phases[-1] == "done"
    assert {"download", "verify", "extract", "probe", "activate"} <= set(phases)
    assert seen[-1].bytes_done == seen[-1].bytes_total > 0
    assert_settled(data_dirs, V1.overlay_version)


def test_llama_only_update_downloads_only_the_llama_layer(
    overlay_server: OverlayServer, releases: ReleaseFactory, release_keys: Keys, data_dirs: DataDirs
) -> None:
    index_url = overlay_server.url + "releases.json"
    releases.publish(overlay_server.root, V1)
    first = installer(data_dirs, release_keys).install(index_url, TARGET)
    runtime_id = first.overlay.layers["cuda-runtime"]
    overlay_server.requests.clear()
    releases.publish(overlay_server.root, V1, V2)

    update = installer(data_dirs, release_keys).install(
        index_url, dataclasses.replace(TARGET, llama_cpp_version="0.3.37")
    )

    assert update.overlay.overlay_version == V2.overlay_version
    assert update.reused_layers == (runtime_id,)
    assert update.fetched_layers == (update.overlay.layers["llama-cuda"],)
    archives = sorted(r.path for r in overlay_server.requests if r.path.endswith(".tar.zst"))
    assert archives == [f"llama-cuda-{V2.overlay_version}-linux_x86_64.tar.zst"]
    store = OverlayStore(data_dirs)
    previous = store.previous()
    assert previous is not None and previous.overlay_version == V1.overlay_version
    assert_settled(data_dirs, V2.overlay_version)


def test_reinstalling_the_active_release_changes_nothing(
    releases: ReleaseFactory, release_keys: Keys, data_dirs: DataDirs, tmp_path: Path
) -> None:
    index = releases.publish(tmp_path / "release", V1)
    installer(data_dirs, release_keys).install(str(index), TARGET)

    again = installer(data_dirs, release_keys).install(str(index), TARGET)

    assert not again.changed and again.fetched_layers == ()
    assert OverlayStore(data_dirs).previous() is None
    assert_settled(data_dirs, V1.overlay_version)


def test_rollback_and_remove_switch_pointers_and_keep_layers_in_use(
    releases: ReleaseFactory, release_keys: Keys, data_dirs: DataDirs, tmp_path: Path
) -> None:
    v2 = ReleaseSpec(overlay_version="0.3.36-cu13.0-2", serial=2)
    installer(data_dirs, release_keys).install(str(releases.publish(tmp_path / "r1", V1)), TARGET)
    installer(data_dirs, release_keys).install(str(releases.publish(tmp_path / "r2", v2)), TARGET)
    store = OverlayStore(data_dirs)

    assert store.rollback().overlay_version == V1.overlay_version
    assert_settled(data_dirs, V1.overlay_version)
    previous = store.previous()
    assert previous is not None and previous.overlay_version == v2.overlay_version

    removed = store.remove()
    assert removed is not None and removed.overlay_version == V1.overlay_version
    assert_settled(data_dirs, None)
    layers = {path.name for path in (data_dirs.overlays / "layers").iterdir()}
    assert layers == set(removed.layers.values()), "v2 is referenced by nothing after remove"
    assert store.rollback().overlay_version == V1.overlay_version
    assert_settled(data_dirs, V1.overlay_version)


@pytest.mark.slow
def test_real_overlay_passes_the_real_probe(
    built_overlay: BuiltOverlay, data_dirs: DataDirs, tmp_path: Path
) -> None:
    """The overlay `build_overlay` makes from the genuine CUDA build's module (and NVIDIA's
    libcudart), installed with the default probe: a `llamaship probe` child process preloads
    libcudart, and the bundle's own llama.cpp registers its ggml backends with the overlay's
    module named by GGML_BACKEND_PATH (no driver here: the CUDA backend is not loaded, the
    loader says why, the CPU variants load)."""
    release = tmp_path / "release"
    release.mkdir()
    built = [
        built_overlay.runtime_archive,
        built_overlay.runtime_manifest,
        built_overlay.llama_archive,
        built_overlay.llama_manifest,
    ]
    for path in [*built, *(p.with_name(p.name + ".sig") for p in built[1::2])]:
        os.link(path, release / path.name)
    write_release_index(
        release,
        [[release / built[1].name, release / built[3].name]],
        7,
        built_overlay.keys.private,
        "",
    )

    probed: list[ProbeResult] = []

    def real_probe(module: Path, runtime_lib_dir: Path, timeout: float) -> None:
        probed.append(run_probe(module, runtime_lib_dir, timeout))

    result = Installer(data_dirs, [built_overlay.keys.public], probe=real_probe).install(
        str(release / "releases.json"), TARGET
    )

    active = OverlayStore(data_dirs).active()
    assert active is not None and active.overlay_version == result.overlay.overlay_version
    assert active.module.is_file() and active.module.parent.name == "backends"
    assert (active.runtime_lib_dir / "libcudart.so.13").is_file()
    [seen] = probed
    assert not Path(seen.llama_cpp_path).is_relative_to(data_dirs.home)  # the bundle's
    assert "CPU" in seen.backends
    # the test layer leaves cuBLAS out: the loader stops there, having found libcudart
    assert seen.cuda_error is not None and "libcublas.so.13" in seen.cuda_error
    assert_settled(data_dirs, result.overlay.overlay_version)

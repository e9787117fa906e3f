"""The signed layer manifest: what one overlay layer holds and what it needs from a machine.

Signatures cover the exact canonical bytes (`dump_document`), so the build side writes these
models and the runtime parses the bytes it verified. Field problems are all reported at once,
each under its field; the checks between fields (layer roots, `requires`, links, sizes, the
facts each kind of layer must state) run once every field is valid and name their fields.

The files' own rules (links, sizes, roots) are `llamaship_contract.layer_files`'.

Layers come in kinds: `cuda` (`cuda-runtime` + `llama-cuda`, NVIDIA) and `vulkan`
(`llama-vulkan`, any GPU with a Vulkan driver; the loader comes with the driver). `llama-cuda`
and `llama-vulkan` hold one ggml backend module each, which the bundle's own ggml loads (the
same compile); `cuda-runtime` holds the CUDA libraries the CUDA module links. The release index
(`llamaship_contract.release_index`) lists releases by kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_args

from pydantic import (
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from llamaship_contract.document import StrictDocument, dump_document
from llamaship_contract.layer_files import ArchiveRef, FileEntry, file_problems
from llamaship_contract.overlay_fields import (
    Count,
    CudaArch,
    CudaVersion,
    DriverVersion,
    LayerId,
    ManifestError,
    Sha256,
    ShaderFeature,
    Tag,
    Text,
    Timestamp,
    VersionFloor,
    VulkanApi,
    parse_signed,
)

FORMAT = 2
LayerName = Literal["cuda-runtime", "llama-cuda", "llama-vulkan"]
LayerKind = Literal["cuda", "vulkan"]
# The layers of a release of each kind, in install order (a required layer first).
KIND_LAYERS: Mapping[LayerKind, tuple[LayerName, ...]] = {
    "cuda": ("cuda-runtime", "llama-cuda"),
    "vulkan": ("llama-vulkan",),
}
KIND_OF_LAYER: Mapping[LayerName, LayerKind] = {
    layer: kind for kind, layers in KIND_LAYERS.items() for layer in layers
}
LAYER_NAMES: tuple[LayerName, ...] = KIND_LAYERS["cuda"]
# The top-level directories each layer may hold.
LAYER_ROOTS: Mapping[str, tuple[str, ...]] = {
    "cuda-runtime": ("lib", "bin", "licenses"),
    # ggml backend modules (libggml-cuda.so, ggml-vulkan.dll...) that the bundle's own ggml
    # loads, and their notices.
    "llama-cuda": ("backends", "licenses"),
    "llama-vulkan": ("backends", "licenses"),
}
# The layer a layer must require, or None when it stands alone.
REQUIRED_LAYER: Mapping[str, str | None] = {
    "cuda-runtime": None,
    "llama-cuda": "cuda-runtime",
    "llama-vulkan": None,
}
OsName = Literal["linux", "windows"]


# The fields only one kind of layer states; a document of the other kind leaves them out.
KIND_FIELDS: Mapping[LayerKind, tuple[str, ...]] = {
    "cuda": ("cuda_version", "min_driver", "cuda_archs", "ptx_archs"),
    "vulkan": ("vulkan_api", "shader_features"),
}


def _absent(value: object) -> bool:
    return value is None


def without_other_kinds(kind: LayerKind, data: dict[str, Any]) -> dict[str, Any]:
    """`data` (a dumped manifest or index entry) without the fields of the other kinds."""
    other = {name for each, names in KIND_FIELDS.items() if each != kind for name in names}
    return {key: value for key, value in data.items() if key not in other}


class KindFacts(StrictDocument):
    """What a release needs from a machine, as its layer manifests and its index entry state it:
    the floors every kind has, and the facts of one kind (the other kind's stay empty)."""

    overlay_version: Text
    serial: Count
    min_vram_mb: Count
    # The oldest glibc / libstdc++ (GLIBCXX) the layer's ELF libraries load on (Linux only).
    glibc_floor: VersionFloor | None = Field(default=None, exclude_if=_absent)
    glibcxx_floor: VersionFloor | None = Field(default=None, exclude_if=_absent)
    # cuda: the CUDA version, driver floors per OS, and the architectures compiled.
    cuda_version: CudaVersion | None = Field(default=None, exclude_if=_absent)
    min_driver: dict[str, DriverVersion] = Field(default_factory=dict)
    cuda_archs: tuple[CudaArch, ...] = ()
    ptx_archs: tuple[CudaArch, ...] = ()
    # vulkan: the Vulkan API version the module needs and its shader features.
    vulkan_api: VulkanApi | None = Field(default=None, exclude_if=_absent)
    shader_features: tuple[ShaderFeature, ...] = ()

    def kind_problems(self, kind: str) -> list[str]:
        """What a `kind` layer or release must state and must not: CUDA facts only for cuda."""
        problems: list[str] = []
        if kind == "cuda":
            if self.cuda_version is None:
                problems.append("cuda_version: is required for a cuda layer")
            if not self.min_driver:
                problems.append("min_driver: must name the oldest driver for at least one OS")
            if not (self.cuda_archs or self.ptx_archs):
                problems.append(
                    "cuda_archs: and ptx_archs are both empty: the layer runs on no GPU"
                )
            if self.vulkan_api is not None or self.shader_features:
                problems.append("vulkan_api: and shader_features belong to vulkan layers only")
        else:
            if self.vulkan_api is None:
                problems.append("vulkan_api: is required for a vulkan layer")
            if (
                self.cuda_version is not None
                or self.min_driver
                or self.cuda_archs
                or (self.ptx_archs)
            ):
                problems.append(
                    "cuda_version: and the other CUDA fields belong to cuda layers only"
                )
        return problems


class RequiredLayer(StrictDocument):
    """The manifest's `requires`: the exact other layer this one runs with."""

    layer: LayerName
    id: LayerId
    sha256: Sha256

    @model_validator(mode="after")
    def _consistent(self) -> RequiredLayer:
        problems = []
        if not self.id.startswith(f"{self.layer}-"):
            problems.append(f"id: must start with '{self.layer}-'")
        if not self.id.endswith(f"-{self.sha256[:16]}"):
            problems.append("id: must end with the first 16 hex digits of sha256")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class OverlayRequirements(StrictDocument):
    """What an overlay needs from the machine: its llama-cuda manifest, `min_driver` for this OS.

    The compatibility rule (`llamaship.compat`) judges a detection report against it; the
    store's pointer files keep it beside the layers.
    """

    overlay_version: Text
    serial: Count
    cuda_version: CudaVersion
    min_driver: DriverVersion
    cuda_archs: tuple[CudaArch, ...]
    ptx_archs: tuple[CudaArch, ...]
    min_vram_mb: Count


class VulkanRequirements(StrictDocument):
    """What a Vulkan overlay needs from the machine: its llama-vulkan manifest's facts.

    The compatibility rule judges a detection report's Vulkan devices against it; the store's
    `vulkan.json` keeps it beside the layer.
    """

    overlay_version: Text
    serial: Count
    vulkan_api: VulkanApi
    shader_features: tuple[ShaderFeature, ...]
    min_vram_mb: Count


class LayerManifest(KindFacts):
    """A signed description of one overlay layer (`cuda-runtime`, `llama-cuda`, `llama-vulkan`)."""

    format: int
    layer: LayerName
    requires: RequiredLayer | None
    llama_cpp_version: Text
    python_tag: Tag
    platform: Tag
    archive: ArchiveRef
    unpacked_size: Count
    files: tuple[FileEntry, ...]
    created: Timestamp

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: int) -> int:
        if value != FORMAT:
            msg = (
                f"is {value}, this llamaship reads format {FORMAT} only (update the "
                "application to use newer overlays)"
            )
            raise ValueError(msg)
        return value

    @field_validator("min_driver")
    @classmethod
    def _known_os(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(get_args(OsName)))
        if unknown:
            msg = f"names {', '.join(unknown)}: the OS must be one of {', '.join(get_args(OsName))}"
            raise ValueError(msg)
        return value

    @model_serializer(mode="wrap")
    def _kind_fields_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return without_other_kinds(self.kind, handler(self))

    @model_validator(mode="after")
    def _consistent(self) -> LayerManifest:
        problems = file_problems(self.files, self.unpacked_size, LAYER_ROOTS[self.layer])
        wanted = REQUIRED_LAYER[self.layer]
        if wanted is None and self.requires is not None:
            problems.append(f"requires: must be null for a {self.layer} layer")
        elif wanted is not None and self.requires is None:
            problems.append(
                f"requires: must name the {wanted} layer a {self.layer} layer runs with"
            )
        elif self.requires is not None and self.requires.layer != wanted:
            problems.append(f"requires.layer: must be {wanted} for a {self.layer} layer")
        problems += self.kind_problems(KIND_OF_LAYER[self.layer])
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def kind(self) -> LayerKind:
        """The kind of GPU backend the layer belongs to."""
        return KIND_OF_LAYER[self.layer]

    @property
    def id(self) -> str:
        """The store's name for the layer: its kind plus the start of its archive hash."""
        return f"{self.layer}-{self.archive.sha256[:16]}"


def parse_manifest(data: bytes, *, origin: str = "overlay manifest") -> LayerManifest:
    """Validate and type a layer manifest; raises one `ManifestError` naming every bad field."""
    return parse_signed(LayerManifest, data, origin)


def dump_manifest(manifest: LayerManifest) -> bytes:
    """Canonical manifest bytes (sorted keys, compact, UTF-8): what gets signed."""
    return dump_document(manifest)


def requirements_for(source: KindFacts, os_name: str) -> OverlayRequirements:
    """What the release of `source` needs from a machine running `os_name` ('linux', 'windows').

    Raises ManifestError when the overlay names no driver floor for that OS (not built for it).
    """
    min_driver = next(
        (version for name, version in source.min_driver.items() if name == os_name), None
    )
    if min_driver is None:
        known = ", ".join(sorted(source.min_driver)) or "none"
        msg = (
            f"overlay {source.overlay_version} names no minimum driver for {os_name} "
            f"(only for: {known}): it was not built for this OS"
        )
        raise ManifestError(msg)
    if source.cuda_version is None:
        msg = f"overlay {source.overlay_version} is not a CUDA overlay (it names no CUDA version)"
        raise ManifestError(msg)
    return OverlayRequirements(
        overlay_version=source.overlay_version,
        serial=source.serial,
        cuda_version=source.cuda_version,
        min_driver=min_driver,
        cuda_archs=source.cuda_archs,
        ptx_archs=source.ptx_archs,
        min_vram_mb=source.min_vram_mb,
    )


def vulkan_requirements(source: KindFacts) -> VulkanRequirements:
    """What the Vulkan release of `source` (its manifest or index entry) needs from a machine."""
    if source.vulkan_api is None:
        msg = f"overlay {source.overlay_version} is not a Vulkan overlay (it names no Vulkan API)"
        raise ManifestError(msg)
    return VulkanRequirements(
        overlay_version=source.overlay_version,
        serial=source.serial,
        vulkan_api=source.vulkan_api,
        shader_features=source.shader_features,
        min_vram_mb=source.min_vram_mb,
    )


def layer_id(manifest: LayerManifest) -> str:
    """The store's name for a layer: its kind plus the start of its archive hash."""
    return manifest.id

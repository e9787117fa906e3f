"""The model catalogue shipped in the bundle and the user's own settings file.

- `ModelCatalogue` (`llamaship/models/catalogue.json`, package data): the models `llamaship
  models pull NAME` knows, each with its URL, size, sha256, licence and purpose. An entry whose
  size or sha256 could not be checked when it was added is marked `unverified`; pulling it
  needs an explicit hash or an explicit acceptance. An entry on the Hugging Face hub may leave
  both to the hub (`hash_from: hub`): the pull asks the hub for the publisher's sha256 and size
  before it downloads, and refuses the file when the hub publishes none.
- `UserSettings` (`LLAMASHIP_HOME/settings.json`): the choices the user makes in the app or
  with `llamaship models use`: the model, the GPU offload mode and the GPU upgrade consent.
  They are the lowest configuration layer: `.env`, the environment and the command line win.
"""

from __future__ import annotations

import re
from typing import Annotated, Final, Literal

from pydantic import Field, model_validator

from llamaship_contract.document import Document
from llamaship_contract.overlay_fields import Matches, Sha256, Text

CATALOGUE_FORMAT: Final = 1
SETTINGS_SCHEMA: Final = 1

Purpose = Literal["chat", "embedding"]
OffloadMode = Literal["auto", "full", "mixed", "cpu"]
"""auto: the GPU fit decides; full: every layer on the GPU; mixed: `offload_layers` layers on
the GPU, the rest on the CPU; cpu: no offload."""
UpgradeConsent = Literal["unset", "enable", "later", "never"]
"""The answer to "Upgrade to GPU?": not asked yet, Enable, Maybe later, Don't ask again."""

ModelName = Annotated[
    str,
    Field(max_length=100),
    Matches(r"[a-z0-9][a-z0-9._-]*", "a lowercase name of letters, digits, '.', '_' and '-'"),
]
ModelFileName = Annotated[
    str,
    Field(max_length=200),
    Matches(
        r"[A-Za-z0-9][A-Za-z0-9._-]*\.gguf",
        "a plain .gguf file name (letters, digits, '.', '_', '-'; no directories)",
    ),
]
HttpUrl = Annotated[str, Matches(r"https?://[^\s\x00]+", "an http:// or https:// URL")]
HUB_ORIGIN: Final = "https://huggingface.co"
HUB_FILE_URL: Final = re.compile(
    r"https://huggingface\.co/[^/\s]+/[^/\s]+/resolve/[^/\s]+/[^\s?#]+"
)
"""A file on the hub: `https://huggingface.co/<owner>/<repo>/resolve/<revision>/<path>`."""
HashSource = Literal["catalogue", "hub"]


class CatalogueEntry(Document):
    """One model that can be pulled by name."""

    name: ModelName
    file_name: ModelFileName = Field(description="its name under LLAMASHIP_HOME/models")
    url: HttpUrl
    size: int | None = Field(gt=0, description="bytes; null only when unverified")
    sha256: Sha256 | None = Field(description="null only when unverified")
    license: Text
    purpose: Purpose
    context_length: int = Field(gt=0, description="tokens the model was trained for")
    min_ram_mb: int = Field(gt=0, description="memory it needs to run on the CPU, MiB")
    unverified: bool = Field(
        default=False,
        description=(
            "size or sha256 could not be checked: pulling needs --sha256 or --accept-unverified"
        ),
    )
    hash_from: HashSource = Field(
        default="catalogue",
        description=(
            "hub: size and sha256 (when null here) are the ones the Hugging Face hub publishes "
            "for the url, asked before each pull; a size and sha256 given here win"
        ),
    )

    @model_validator(mode="after")
    def _pinned_unless_unverified(self) -> CatalogueEntry:
        if self.hash_from == "hub":
            if not HUB_FILE_URL.fullmatch(self.url):
                msg = (
                    f"url: hash_from 'hub' needs a {HUB_ORIGIN}/<owner>/<repo>/resolve/"
                    "<revision>/<file> URL"
                )
                raise ValueError(msg)
        elif not self.unverified:
            missing = [name for name in ("size", "sha256") if getattr(self, name) is None]
            if missing:
                raise ValueError(
                    "; ".join(
                        f"{name}: required unless the entry is marked unverified"
                        for name in missing
                    )
                )
        return self


class ModelCatalogue(Document):
    """Every model `llamaship models pull NAME` knows."""

    format: Literal[1] = CATALOGUE_FORMAT
    models: tuple[CatalogueEntry, ...]

    @model_validator(mode="after")
    def _unique(self) -> ModelCatalogue:
        problems = []
        for field in ("name", "file_name"):
            seen: set[str] = set()
            for entry in self.models:
                value = getattr(entry, field)
                if value in seen:
                    problems.append(f"models: lists the {field} '{value}' twice")
                seen.add(value)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def find(self, name: str) -> CatalogueEntry | None:
        """The entry called `name` (or whose file is `name`), if any."""
        return next((entry for entry in self.models if name in (entry.name, entry.file_name)), None)


class UserSettings(Document):
    """The user's choices, persisted in `LLAMASHIP_HOME/settings.json`."""

    schema_: Literal[1] = Field(default=SETTINGS_SCHEMA, alias="schema")
    model: ModelFileName | None = Field(
        default=None,
        description=(
            "the chosen model: a file in LLAMASHIP_HOME/models (LLAMASHIP_MODEL and --model win)"
        ),
    )
    offload_mode: OffloadMode = "auto"
    offload_layers: int | None = Field(
        default=None,
        ge=0,
        description=("layers on the GPU in mixed mode (kept, unused, in the other modes)"),
    )
    gpu_upgrade_consent: UpgradeConsent = "unset"

    @model_validator(mode="after")
    def _layers_for_mixed(self) -> UserSettings:
        if self.offload_mode == "mixed" and self.offload_layers is None:
            raise ValueError("offload_layers: required when offload_mode is 'mixed'")
        return self

    def n_gpu_layers(self) -> str:
        """The offload mode as an LLAMACPP_N_GPU_LAYERS value: auto, -1 (all), N or 0."""
        if self.offload_mode == "mixed":
            return str(self.offload_layers)
        return {"auto": "auto", "full": "-1", "cpu": "0"}[self.offload_mode]

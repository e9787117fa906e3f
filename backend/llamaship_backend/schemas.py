"""Request bodies (validated strictly) and the replies of the llamaship API (`/api/*`).

The replies are what FastAPI checks and serializes each `/api/*` route's return value with, and
what `llamaship openapi` documents; the OpenAI-compatible routes (`/v1/*`) reply with
llama-cpp-python's own permissive shapes. `/api/capabilities` replies with the contract's
`Capabilities` document (other programs read it).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
)
from pydantic_core import PydanticCustomError

from llamaship.jobs import JobState
from llamaship.overlay.install import Phase
from llamaship_contract.bench import BenchRecord
from llamaship_contract.models import OffloadMode, Purpose, UpgradeConsent, UserSettings

# Strict: "5" is not a number and 1 is not a string; unknown OpenAI fields are ignored
# so that stock OpenAI clients (which send `n`, `user`, `stream_options`...) work.
_STRICT = ConfigDict(strict=True, extra="ignore")


def _check_text_or_texts(value: object) -> object:
    """One error for the field instead of one per union member (`str`, `list[str]`)."""
    texts = value if isinstance(value, list) else [value]
    if not all(isinstance(text, str) for text in texts):
        raise PydanticCustomError("text_or_texts", "must be a string or a list of strings")
    return value


def _check_not_empty(value: str | list[str]) -> str | list[str]:
    if not value or any(not text for text in ([value] if isinstance(value, str) else value)):
        raise PydanticCustomError("empty_text", "must not be empty (nor hold an empty string)")
    return value


TextOrTexts = Annotated[str | list[str], BeforeValidator(_check_text_or_texts)]


class ChatMessage(BaseModel):
    """One message of a conversation."""

    model_config = _STRICT

    role: Literal["system", "user", "assistant"]
    content: str


class ChatCompletionRequest(BaseModel):
    """`POST /v1/chat/completions`."""

    model_config = _STRICT

    messages: list[ChatMessage] = Field(min_length=1)
    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.8, ge=0.0, le=2.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    stop: TextOrTexts | None = None
    stream: bool = False
    seed: int | None = None


class EmbeddingRequest(BaseModel):
    """`POST /v1/embeddings`."""

    model_config = _STRICT

    input: Annotated[TextOrTexts, AfterValidator(_check_not_empty)]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class BenchmarkRequest(BaseModel):
    """`POST /api/admin/benchmark`: time `n_prompt` prompt tokens (pp) and `n_gen` generated
    tokens (tg) with the active plan and, if `cpu` and the plan offloads, on CPU only."""

    model_config = ConfigDict(strict=True, extra="forbid")

    n_prompt: int = Field(default=512, ge=1, le=8192)
    n_gen: int = Field(default=128, ge=2, le=4096)
    cpu: bool = True


class SettingsChange(BaseModel):
    """`POST /api/settings`: only the fields sent are changed."""

    model_config = ConfigDict(extra="forbid", strict=True)

    offload_mode: OffloadMode = "auto"
    offload_layers: int | None = Field(default=None, ge=0)
    gpu_upgrade_consent: UpgradeConsent = "unset"


class PullBody(BaseModel):
    """`POST /api/models/pull`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(
        min_length=1,
        max_length=2000,
        description="a catalogue name or an http(s) URL of a .gguf file",
    )
    sha256: str | None = Field(default=None, description="the sha256 the file must have")
    accept_unverified: bool = Field(
        default=False, description=("pull a model whose sha256 is unknown without checking it")
    )
    use: bool = Field(
        default=False,
        description="once installed, choose it (settings.json) and serve it now, no restart",
    )


class UseBody(BaseModel):
    """`POST /api/models/use`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(
        min_length=1, max_length=200, description="an installed model: catalogue name or file name"
    )


# Replies: a field the route does not fill is an error (a 500), not a silently missing key.
_REPLY = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    """What went wrong, OpenAI-style."""

    model_config = _REPLY

    message: str = Field(description="one line: what was wrong and what to do")
    type: str = Field(description="invalid_request_error, model_error or server_error")
    code: str = Field(description="a stable machine-readable name, e.g. model_not_found")
    param: str | None = Field(description="the request field at fault, if one is")


class ErrorReply(BaseModel):
    """Every error reply (4xx and 5xx), `/v1/*` included."""

    model_config = _REPLY

    error: ErrorDetail


class HealthReply(BaseModel):
    """`GET /api/health`."""

    model_config = _REPLY

    status: Literal["ok"]


class SettingsReply(BaseModel):
    """`GET /api/settings`: the saved settings (the defaults when none were saved)."""

    model_config = _REPLY

    settings: UserSettings
    path: str = Field(description="the settings file (LLAMASHIP_HOME/settings.json)")


class SettingsChangeReply(SettingsReply):
    """`POST /api/settings`: the settings as saved."""

    restart_required: bool = Field(description="the GPU offload changed: used from the next start")


class JobStarted(BaseModel):
    """`POST /api/models/pull` and `POST /api/admin/upgrade-gpu` (202): poll this job."""

    model_config = _REPLY

    job_id: str = Field(description="the new job's id, or the running one's for the same work")


class RestartReply(BaseModel):
    """`POST /api/admin/restart` (202): the server stops after replying."""

    model_config = _REPLY

    status: Literal["restarting"]
    mode: str = Field(description="exec (re-runs itself) or exit (code 75, its supervisor)")


class BenchmarkReply(BenchRecord):
    """`POST /api/admin/benchmark`: the stored bench record, its summary and the offload."""

    # `summary` on the wire (BenchRecord's property keeps the name in Python).
    summary_: str = Field(alias="summary", description="about N tokens/s, K× CPU")
    gpu_offload: bool = Field(description="the running llama.cpp build can offload to a GPU")


class UpgradeOffer(BaseModel):
    """`GET /api/admin/upgrade-gpu`: what an upgrade would install (nothing is fetched)."""

    model_config = _REPLY

    overlay_version: str
    kind: Literal["cuda", "vulkan"] = Field(description="the overlay's kind, by the rule's rank")
    cuda_version: str | None = Field(description="a CUDA overlay's CUDA version (null: Vulkan)")
    download_bytes: int = Field(description="archive bytes of the layers not yet installed")
    unpacked_bytes: int = Field(description="disk space those layers take once unpacked")
    active: bool = Field(description="this overlay is already the active one")
    running_overlay_version: str | None = Field(description="the overlay in use now (null: CPU)")


class UpgradeJobProgress(BaseModel):
    """`GET /api/admin/upgrade-gpu/{job_id}`."""

    model_config = _REPLY

    id: str
    state: JobState
    phase: Phase
    bytes_done: int = Field(description="archive bytes fetched, over all layers")
    bytes_total: int
    message: str
    restart_required: bool = Field(
        description="the overlay now active differs from the one the app booted with"
    )


class PullJobProgress(BaseModel):
    """`GET /api/models/pull/{job_id}`."""

    model_config = _REPLY

    id: str
    model: str
    file_name: str
    state: JobState
    bytes_done: int
    bytes_total: int
    message: str


class ModelListing(BaseModel):
    """One model of `GET /api/models`: a catalogue entry, or an installed file outside it (its
    catalogue fields null, `unverified`)."""

    model_config = _REPLY

    name: str
    file_name: str
    url: str | None
    size: int | None
    sha256: str | None
    license: str | None
    purpose: Purpose | None
    context_length: int | None
    min_ram_mb: int | None
    unverified: bool
    in_catalogue: bool
    installed: bool
    installed_size: int | None = Field(description="bytes of the installed file")
    active: bool = Field(description="the file chosen in settings.json")


class ModelsReply(BaseModel):
    """`GET /api/models`."""

    model_config = _REPLY

    models_dir: str
    active: str | None = Field(description="the chosen file (settings.json)")
    serving: str | None = Field(description="the model file this process serves now")
    default_chat: str | None = Field(
        description="the catalogue's default chat model: what the page offers to set up first"
    )
    models: list[ModelListing]


class ModelChoice(BaseModel):
    """`POST /api/models/use`: the choice is saved and served from now on."""

    model_config = _REPLY

    active: str = Field(description="the chosen file name")
    name: str
    path: str
    restart_required: bool

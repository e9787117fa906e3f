"""Why one detection source gave no answer; `detect_gpus` records these in the report."""

from llamaship_contract.errors import LlamashipError


class DetectionError(LlamashipError):
    """A detection source (NVML, nvidia-smi, the Vulkan loader) gave no usable answer."""


class SourceMissing(DetectionError):
    """The source is not installed: the normal state of a machine without an NVIDIA driver."""


class SourceFailed(DetectionError):
    """The source is installed but failed, hung or answered garbage: worth retrying next launch."""


class NoDriver(SourceMissing):
    """The Vulkan loader is installed but found no Vulkan driver it could load."""


class LoaderError(SourceFailed):
    """The Vulkan loader answered with an error (vkCreateInstance or the device list failed)."""

"""The one error diffusion.lora raises for unusable LoRA files and settings."""

from __future__ import annotations

from ..loaders import WeightsError

__all__ = ["LoraError"]


class LoraError(WeightsError):
    """A LoRA file that cannot be used: not safetensors, malformed, an unknown key, a layer the
    model lacks or whose shape differs, a weight out of range. The message names the file and
    the key and says what to do."""

"""The one error the loaders raise for unusable model files."""

from __future__ import annotations

__all__ = ["WeightsError"]


class WeightsError(ValueError):
    """A model file or folder cannot be loaded: missing, truncated, corrupt, an unsupported format
    (a pickle naming a global outside the tensor allowlist is refused), or lacking a tensor its
    component needs.

    The message names the file and, where there is one, the tensor key, and says what to do.
    """


# torch.save files, read by TorchFile without running their pickle
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")


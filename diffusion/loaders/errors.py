"""The one error the loaders raise for unusable model files."""

from __future__ import annotations

__all__ = ["WeightsError"]


class WeightsError(ValueError):
    """A model file or folder cannot be loaded: missing, truncated, corrupt, an unsupported format
    (pickle checkpoints are refused), or lacking a tensor its component needs.

    The message names the file and, where there is one, the tensor key, and says what to do.
    """


PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")


def pickle_refused(path: object) -> WeightsError:
    """The error for a pickle checkpoint: why it is refused and how to convert it."""
    return WeightsError(
        f"{path}: refusing to load a pickle checkpoint (.ckpt/.pt/.pth/.bin): unpickling runs "
        "whatever code the file contains. Use the model's .safetensors release, or convert the "
        "file once on a machine you trust: python -c \"import torch, safetensors.torch as st; "
        "sd = torch.load('model.ckpt', map_location='cpu', weights_only=True); "
        "sd = sd.get('state_dict', sd); st.save_file({k: v.contiguous() for k, v in sd.items() "
        "if isinstance(v, torch.Tensor)}, 'model.safetensors')\"")

"""The WebUI's "Approx NN" live preview network (VAEApprox) on gpustd: latents to a small
picture (twice the latents' size) through eight plain convs, a cheap stand-in for the VAE.

    approx = load_vae_approx("models/VAE-approx/model.pt")
    image = approx(latents)           # [N, C, h, w] -> [N, 3, 2h, 2w], values about [-1, 1]

Files as the WebUI has them in models/VAE-approx: `model.pt` (SD 1/2, 4 channels),
`vaeapprox-sdxl.pt` (SDXL), and Forge's `vaeapprox-sd3.pt` (SD3, 16 channels): a pickled
state dict with keys `conv1.weight` ... `conv8.bias` (read without running the pickle), or the
same keys as `.safetensors`. The network: nearest 2x upsampling, 11 zero pixels of padding on
every side, then convs of 7, 5 and six of 3 pixels (no padding), each followed by a leaky ReLU
of slope 0.1 (the last one too). torch: the WebUI's `modules.sd_vae_approx.VAEApprox`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

import gpustd
from gpucore import Device, default_device
from gpustd import Tensor
from gpustd.nn import conv2d, upsample_nearest2x

from ..loaders import WeightsError
from ..loaders.formats.torch_file import open_weights_file

__all__ = ["VAE_APPROX_FILES", "VAEApprox", "load_vae_approx", "vae_approx_name"]

_LAYERS = 8
_PADDING = 11  # the WebUI's `extra`: the convs' shrinkage (6 + 4 + 6 * 2 = 22) made good
# (out channels, kernel side) of conv1..conv8, as the WebUI builds them
_SHAPES = ((8, 7), (16, 5), (32, 3), (64, 3), (32, 3), (16, 3), (8, 3), (3, 3))
VAE_APPROX_FILES = {"sd1": "model.pt", "sd2": "model.pt", "sdxl": "vaeapprox-sdxl.pt",
                    "sd3": "vaeapprox-sd3.pt"}
"""The WebUI's (and Forge's, for SD3) VAEApprox file name per latent space."""


def vae_approx_name(latent_space: str) -> str | None:
    """The VAEApprox file name for a latent space ("sdxl" -> vaeapprox-sdxl.pt), None where
    the WebUI has none (FLUX and the newer families: their previews use Approx cheap)."""
    return VAE_APPROX_FILES.get(latent_space)


class VAEApprox:
    """The eight convs, `weights` keyed as the WebUI's state dict (`conv1.weight`, ...)."""

    def __init__(self, weights: Mapping[str, Tensor]) -> None:
        self.weights = dict(weights)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], *,
                        device: Device | None = None) -> VAEApprox:
        """Build from numpy arrays under the WebUI's keys; ValueError in one line naming the
        first key missing or of the wrong shape."""
        device = device or default_device()
        channels = None
        for index, (out, side) in enumerate(_SHAPES, start=1):
            for part in ("weight", "bias"):
                key = f"conv{index}.{part}"
                if key not in state:
                    raise ValueError(f"not a VAEApprox state dict: no {key} (keys "
                                     f"{sorted(state)[:3]})")
            shape = tuple(np.shape(state[f"conv{index}.weight"]))
            inputs = channels if index > 1 else (shape[1] if len(shape) == 4 else -1)
            if shape != (out, inputs, side, side):
                raise ValueError(f"conv{index}.weight has shape {shape}, VAEApprox's is "
                                 f"{(out, inputs, side, side)}")
            channels = out
        weights = {key: Tensor.from_numpy(np.asarray(state[key], dtype=np.float32),
                                          device=device)
                   for index in range(1, _LAYERS + 1) for key in
                   (f"conv{index}.weight", f"conv{index}.bias")}
        return cls(weights)

    @property
    def latent_channels(self) -> int:
        return int(self.weights["conv1.weight"].shape[1])

    @property
    def device(self) -> Device:
        return self.weights["conv1.weight"].device

    def __call__(self, latents: Tensor) -> Tensor:
        """[N, C, h, w] latents (as the sampler holds them) -> [N, 3, 2h, 2w], about [-1, 1]."""
        # 1. nearest 2x upsampling; the zero padding is the first conv's
        h = upsample_nearest2x(latents)
        for index in range(1, _LAYERS + 1):
            h = conv2d(h, self.weights[f"conv{index}.weight"], self.weights[f"conv{index}.bias"],
                       padding=_PADDING if index == 1 else 0)
            # 2. leaky ReLU, slope 0.1 (after every conv, the last one too)
            h = gpustd.maximum(h, h * 0.1)
        return h


def load_vae_approx(path: str | os.PathLike[str], *, device: Device | None = None) -> VAEApprox:
    """The VAEApprox network in a WebUI `.pt` file (or `.safetensors` with its keys). Raises
    WeightsError naming the path for a missing or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: VAEApprox file not found; put the WebUI's model.pt "
                           "(vaeapprox-sdxl.pt for SDXL) there")
    file = open_weights_file(path)
    try:
        return VAEApprox.from_state_dict({key: file.read(key) for key in file.keys()},
                                         device=device)
    except ValueError as error:
        raise WeightsError(f"{path}: {error}") from None

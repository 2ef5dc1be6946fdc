"""TAESD's decoder on gpustd (madebyollin's tiny autoencoder): latents to a picture in a few
plain 3x3 convs, for live previews while sampling.

    decoder = load_taesd_decoder("models/VAE-approx/taesd_decoder.safetensors")
    image = decoder(latents)           # [N, C, h, w] -> [N, 3, 8h, 8w], values in [0, 1]

Files: `taesd_decoder` (SD 1/2, 4 channels), `taesdxl_decoder` (SDXL), `taesd3_decoder` (SD3,
16 channels), `taef1_decoder` (FLUX.1, 16), as `.safetensors` or `.pth` (read without running
the pickle), with the keys of the original `nn.Sequential` (`1.weight`, `3.conv.0.weight`, ...);
and diffusers' `AutoencoderTiny` folders (`config.json`, `decoder.layers.*` keys). The original
layout: Clamp, conv, ReLU, then per stage blocks, upsampling and a conv; every gap in the indices
after the ReLU is a nearest 2x upsampling. torch: `taesd.Decoder`; diffusers'
`AutoencoderTiny.decode(x).sample` equals `2 * decoder(x) - 1`.
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
from ..loaders.formats.diffusers_folder import read_json, weight_refs
from ..loaders.formats.torch_file import open_weights_file

__all__ = ["TAESDDecoder", "load_taesd_decoder"]


def _relu(x: Tensor) -> Tensor:
    return gpustd.maximum(x, 0.0)


class TAESDDecoder:
    """The decoder as a list of layers: ("conv", index), ("block", index), ("relu", None),
    ("upsample", None); `weights` keyed as the original file (`{index}.weight`, ...)."""

    def __init__(self, weights: Mapping[str, Tensor], layers: list[tuple[str, int]]) -> None:
        self.weights = dict(weights)
        self.layers = layers

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], *, dtype: Any = np.float32,
                        device: Device | None = None) -> TAESDDecoder:
        """Build from numpy arrays in the original layout or diffusers' (`decoder.layers.*`;
        an `AutoencoderTiny` state dict's encoder keys are left out). ValueError for others."""
        device = device or default_device()
        if any(key.startswith("decoder.layers.") for key in state):
            prefix = len("decoder.layers.")
            state = {_shift(key[prefix:]): value for key, value in state.items()
                     if key.startswith("decoder.layers.")}
        try:
            indices = sorted({int(key.split(".")[0]) for key in state})
        except ValueError:
            raise ValueError("not a TAESD decoder: expected keys such as 1.weight or "
                             f"decoder.layers.0.weight, found {sorted(state)[:3]}") from None
        if not indices or f"{indices[0]}.weight" not in state or indices[0] != 1:
            raise ValueError(f"not a TAESD decoder: its first layer is not a conv at index 1 "
                             f"(keys {sorted(state)[:3]})")
        layers: list[tuple[str, int]] = []
        for index in range(1, indices[-1] + 1):
            if f"{index}.weight" in state:
                layers.append(("conv", index))
            elif f"{index}.conv.0.weight" in state:
                layers.append(("block", index))
            else:
                layers.append(("relu" if index == 2 else "upsample", index))
        weights = {key: Tensor.from_numpy(np.asarray(value, dtype=np.float32), dtype=dtype,
                                          device=device) for key, value in state.items()}
        return cls(weights, layers)

    @property
    def latent_channels(self) -> int:
        return int(self.weights["1.weight"].shape[1])

    def __call__(self, latents: Tensor) -> Tensor:
        """[N, C, h, w] latents (as the sampler holds them) -> [N, 3, 8h, 8w] in [0, 1]."""
        # 1. Clamp: 3 * tanh(x / 3) keeps outlying latents from blowing up the convs
        h = gpustd.tanh(latents * (1.0 / 3.0)) * 3.0
        for kind, index in self.layers:
            if kind == "conv":
                h = conv2d(h, self.weights[f"{index}.weight"], self.weights.get(f"{index}.bias"),
                           padding=1)
            elif kind == "block":
                h = self._block(h, index)
            elif kind == "relu":
                h = _relu(h)
            else:
                h = upsample_nearest2x(h)
        return h

    def _block(self, x: Tensor, index: int) -> Tensor:
        # 2. a block: relu(conv(relu(conv(relu(conv(x))))) + skip(x)), skip a 1x1 conv or x
        w = self.weights
        h = _relu(conv2d(x, w[f"{index}.conv.0.weight"], w[f"{index}.conv.0.bias"], padding=1))
        h = _relu(conv2d(h, w[f"{index}.conv.2.weight"], w[f"{index}.conv.2.bias"], padding=1))
        h = conv2d(h, w[f"{index}.conv.4.weight"], w[f"{index}.conv.4.bias"], padding=1)
        skip = w.get(f"{index}.skip.weight")
        return _relu(h + (conv2d(x, skip, None) if skip is not None else x))


def _shift(key: str) -> str:
    # diffusers' DecoderTiny.layers has no Clamp module, so its indices are one lower
    index, _, rest = key.partition(".")
    return f"{int(index) + 1}.{rest}"


def load_taesd_decoder(path: str | os.PathLike[str], *, dtype: Any = np.float32,
                       device: Device | None = None) -> TAESDDecoder:
    """The decoder in a `.safetensors`/`.pth` file or an `AutoencoderTiny` folder. Raises
    WeightsError naming the path for anything else."""
    path = Path(path)
    if path.is_dir():
        config = read_json(path / "config.json")
        for key, want in (("act_fn", "relu"), ("upsample_fn", "nearest"),
                          ("upsampling_scaling_factor", 2)):
            if config.get(key, want) != want:
                raise WeightsError(f"{path}: TAESD with {key}={config[key]!r} is not supported "
                                   f"(only {want!r})")
        refs, where = weight_refs(path, "diffusion_pytorch_model", None)
        state = {key: ref.file.read(key) for key, ref in refs.items()
                 if key.startswith("decoder.")}
    elif path.is_file():
        file, where = open_weights_file(path), str(path)
        state = {key: file.read(key) for key in file.keys()}
    else:
        raise WeightsError(f"{path}: TAESD decoder not found; give a taesd_decoder.safetensors "
                           "or .pth file or an AutoencoderTiny folder")
    try:
        return TAESDDecoder.from_state_dict(state, dtype=dtype, device=device)
    except (ValueError, KeyError) as error:
        raise WeightsError(f"{where}: {error}") from None

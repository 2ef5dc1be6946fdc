"""SigLIP2's vision tower with NaFlex variable resolution, the reader of Z-Image Omni's
condition pictures: transformers' `Siglip2VisionModel` (its parameter names) and the picture
preparation of its `Siglip2ImageProcessor` (`siglip2_patches`).

A picture is resized (Pillow's bilinear) to the largest grid of patch x patch squares, its
aspect kept, that holds at most `max_num_patches` patches; each patch, flattened (row, column,
channel), goes through a linear map. The learned square table of position embeddings is
resized to that grid by an antialiased bilinear resize (torch's `F.interpolate(...,
antialias=True)`, which is Pillow's filter: gpustd.image.resize). The encoder layers are
SigLIP's (diffusion.models.redux). The processor pads the patches to `max_num_patches` and
transformers masks the padded keys, so the real patches' states never see the padding: here
only the real patches are encoded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, nn
from gpustd.image import resize

from ..imaging import condition_picture
from .layers import Place
from .redux import SiglipEncoderLayer
from .transformer_ops import cast, kept

__all__ = ["Siglip2Vision", "naflex_size", "siglip2_patches", "siglip2_state"]

_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "num_channels": 3, "patch_size": 16, "num_patches": 256,
    "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6,
}


def siglip2_state(state: Mapping[str, Any]) -> Mapping[str, Any]:
    """A Siglip2VisionModel's weights under this model's names: transformers 4's
    `vision_model.` prefix dropped, the pooling head (`head.*`, which last_hidden_state does
    not read) left out. A ComponentWeights stays lazy (its refs renamed)."""
    def name(key: str) -> str:
        return key.removeprefix("vision_model.")

    keys = [k for k in state if not name(k).startswith("head.")]
    if all(name(k) == k for k in keys) and len(keys) == len(state):
        return state
    with_refs = getattr(state, "with_refs", None)
    if with_refs is not None:
        refs = state.refs  # type: ignore[attr-defined]
        return with_refs({name(k): refs[k] for k in keys})  # type: ignore[no-any-return]
    return {name(k): state[k] for k in keys}


class Siglip2Vision(nn.Module):
    """A picture -> its last hidden state on the patch grid (h, w, hidden). Config:
    transformers' Siglip2VisionConfig fields (a folder's `config.json`; a full Siglip2Config's
    `vision_config`). Parameter names are Siglip2VisionModel's in transformers 5
    (`embeddings.patch_embedding.weight`, `encoder.layers.0.self_attn.q_proj.weight`,
    `post_layernorm.weight`); `max_num_patches` is the processor's (its
    preprocessor_config.json). transformers: `Siglip2VisionModel(**Siglip2ImageProcessor(
    max_num_patches=...)(image)).last_hidden_state`."""

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None, max_num_patches: int = 256) -> None:
        place: Place = {"dtype": dtype, "device": device}
        cfg = {**_DEFAULTS, **(config.get("vision_config") or config)}
        self.config, self.max_num_patches = cfg, max_num_patches
        side = math.isqrt(cfg["num_patches"])
        if side * side != cfg["num_patches"]:
            raise ValueError(f"SigLIP2 vision config: num_patches {cfg['num_patches']} is not a "
                             "square (the position table is side x side)")
        dim, patch = cfg["hidden_size"], cfg["patch_size"]
        self.side = side
        self.embeddings = nn.Namespace()
        self.embeddings.patch_embedding = nn.Linear(cfg["num_channels"] * patch * patch, dim,
                                                    **place)
        self.embeddings.position_embedding = nn.Embedding(cfg["num_patches"], dim, **place)
        self.encoder = nn.Namespace()
        self.encoder.layers = nn.ModuleList(
            [SiglipEncoderLayer(cfg, place) for _ in range(cfg["num_hidden_layers"])])
        self.post_layernorm = nn.LayerNorm(dim, eps=cfg["layer_norm_eps"], **place)
        self._tables: dict[Any, Tensor] = {}

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any], config: dict[str, Any],
                        dtype: Any = np.float32, *, device: Device | None = None,
                        max_num_patches: int = 256) -> Siglip2Vision:
        """The model with `state_dict` (a Siglip2VisionModel's, `siglip2_state`) loaded."""
        model = cls(config, dtype=dtype, device=device, max_num_patches=max_num_patches)
        model.load_state_dict(siglip2_state(state_dict))
        return model

    @property
    def device(self) -> Device:
        return self.embeddings.patch_embedding.weight.device

    @property
    def dtype(self) -> np.dtype:
        return self.embeddings.patch_embedding.weight.dtype

    def encode(self, image: Any) -> tuple[Tensor, tuple[int, int]]:
        """A picture (PIL, or uint8 HxWx3 / HxWx4) -> (last hidden state (h, w, hidden)
        float32, (h, w) the patch grid). diffusers: ZImageOmniPipeline.prepare_siglip_embeds's
        `last_hidden_state[:, :h * w].view(h, w, C)` and `spatial_shapes[0]`."""
        pixels, (height, width), _ = siglip2_patches(
            image, self.config["patch_size"], self.max_num_patches, device=self.device)
        hidden = self.forward(pixels[:height * width], (height, width))
        return cast(hidden, np.float32).reshape(height, width, hidden.shape[-1]), (height, width)

    def forward(self, pixels: Any, grid: tuple[int, int]) -> Tensor:
        """Patches (h * w, channels * patch^2) of one picture, as siglip2_patches gives them
        (the padding cut off), on the grid (h, w) -> the last hidden state (h * w, hidden),
        post-layer-normed, in the model's dtype."""
        height, width = grid
        features = self.embeddings.patch_embedding.weight.shape[1]
        if np.shape(pixels) != (height * width, features):
            raise ValueError(f"SigLIP2 reads ({height} * {width}, {features}) patches for a "
                             f"{height}x{width} grid (siglip2_patches), got {np.shape(pixels)}")
        if not isinstance(pixels, Tensor):
            pixels = asarray(np.asarray(pixels, np.float32), device=self.device)
        x = self.embeddings.patch_embedding(cast(pixels, self.dtype).reshape(1, *pixels.shape))
        x = x + kept(self._tables, (height, width), lambda: self._positions(height, width))
        for layer in self.encoder.layers:
            x = layer(x)
        return self.post_layernorm(x).reshape(height * width, x.shape[-1])

    def _positions(self, height: int, width: int) -> Tensor:
        """The position table resized to the grid, (1, h * w, hidden) in the model's dtype;
        resized in float32, as transformers upcasts it. transformers:
        `Siglip2VisionEmbeddings.resize_positional_embeddings`."""
        table = cast(self.embeddings.position_embedding.weight, np.float32)
        grid = resize(table.reshape(self.side, self.side, table.shape[-1]), (height, width),
                      method="bilinear")
        return cast(grid.reshape(1, height * width, table.shape[-1]), self.dtype)


def naflex_size(height: int, width: int, patch_size: int, max_num_patches: int
                ) -> tuple[int, int]:
    """(height, width) a picture is resized to: both multiples of patch_size (at least one
    patch), scaled by the largest factor (a binary search to 1e-5) whose grid holds at most
    max_num_patches. transformers: siglip2's `get_image_size_for_max_num_patches`."""
    def scaled(scale: float, size: int) -> int:
        return max(patch_size, math.ceil(size * scale / patch_size) * patch_size)

    low, high = 1e-5 / 10, 100.0  # transformers' bounds, to the bit
    while high - low >= 1e-5:
        scale = (low + high) / 2
        if scaled(scale, height) / patch_size * (scaled(scale, width) / patch_size) \
                <= max_num_patches:
            low = scale
        else:
            high = scale
    return scaled(low, height), scaled(low, width)


def siglip2_patches(image: Any, patch_size: int, max_num_patches: int, *,
                    device: Device | None = None
                    ) -> tuple[np.ndarray, tuple[int, int], np.ndarray]:
    """A picture (PIL, or uint8 HxWx3 / HxWx4) as SigLIP2 reads it: (pixel_values (max_num_patches,
    patch^2 * 3) float32, (h, w) the patch grid, attention mask (max_num_patches,) int32).
    Transparency is composited over white (`condition_picture`, as transformers'
    convert_to_rgb); the picture is resized to naflex_size (Pillow's bilinear:
    gpustd.image.resize), scaled to [0, 1], normalized to [-1, 1] (mean = std = 0.5) and cut
    into patches, each flattened (row, column, channel), in row-major grid order; rows past
    h * w are zero, their mask 0.
    transformers: `Siglip2ImageProcessor(patch_size=..., max_num_patches=...)(image)`'s
    pixel_values[0], spatial_shapes[0] and pixel_attention_mask[0] (its Pillow backend)."""
    if max_num_patches < 1 or patch_size < 1:
        raise ValueError(f"patch_size ({patch_size}) and max_num_patches ({max_num_patches}) "
                         "must be positive")
    array = np.asarray(condition_picture(image, "a picture for SigLIP2"))
    new = naflex_size(array.shape[0], array.shape[1], patch_size, max_num_patches)
    if new != array.shape[:2]:
        array = resize(np.ascontiguousarray(array), new, method="bilinear", device=device)
    # transformers rescales in float64, normalizes in float32
    scaled = (array.astype(np.float64) * (1 / 255)).astype(np.float32)
    normed = (scaled - np.float32(0.5)) / np.float32(0.5)
    grid_h, grid_w = new[0] // patch_size, new[1] // patch_size
    patches = normed.reshape(grid_h, patch_size, grid_w, patch_size, 3).transpose(0, 2, 1, 3, 4)
    pixels = np.zeros((max_num_patches, patch_size * patch_size * 3), np.float32)
    pixels[:grid_h * grid_w] = patches.reshape(grid_h * grid_w, -1)
    mask = np.zeros(max_num_patches, np.int32)
    mask[:grid_h * grid_w] = 1
    return pixels, (grid_h, grid_w), mask

"""The CLIP image encoder IP-Adapter reads pictures with: transformers'
`CLIPVisionModelWithProjection` (OpenCLIP ViT-H/14 for SD 1.5 and the `_vit-h` SDXL adapters,
ViT-bigG/14 for the other SDXL ones), with its parameter names, and the picture preparation of
transformers' `CLIPImageProcessor` (what diffusers' `load_ip_adapter` builds for it)."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, concatenate, nn, permute, take_slice
from gpustd.image import resize

from .clip import CLIPEncoderLayer
from .layers import Place

__all__ = ["CLIP_MEAN", "CLIP_STD", "CLIPVisionModelWithProjection", "clip_pixels"]

_DEFAULTS: dict[str, Any] = {
    "hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
    "num_attention_heads": 16, "image_size": 224, "patch_size": 14, "projection_dim": 1024,
    "hidden_act": "gelu", "layer_norm_eps": 1e-5, "num_channels": 3,
}
# OpenAI's normalization, which every CLIP image processor config uses
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class CLIPVisionModelWithProjection(nn.Module):
    """Pictures (B, 3, S, S), prepared by `clip_pixels`, -> image embeddings (B, projection_dim)
    or the hidden states of one layer (B, 1 + (S / patch)^2, hidden). Config: transformers'
    CLIPVisionConfig fields (a folder's `config.json`; a full CLIPConfig's `vision_config`).

    Parameter names are transformers' (`vision_model.encoder.layers.0.self_attn.q_proj.weight`,
    `visual_projection.weight`). transformers: `CLIPVisionModelWithProjection`."""

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None, projection: bool = True) -> None:
        """`projection` False: transformers' `CLIPVisionModel` (no visual_projection; what Wan
        2.1 image-to-video folders hold), which gives `hidden_states` only."""
        place: Place = {"dtype": dtype, "device": device}
        vision = config.get("vision_config") or config
        cfg = {**_DEFAULTS, **vision}
        if "vision_config" in config and config.get("projection_dim"):
            cfg["projection_dim"] = config["projection_dim"]
        self.config = cfg
        dim, patch = cfg["hidden_size"], cfg["patch_size"]
        if cfg["image_size"] % patch:
            raise ValueError(f"CLIP vision config: image_size {cfg['image_size']} is not a "
                             f"multiple of patch_size {patch}")
        positions = (cfg["image_size"] // patch) ** 2 + 1
        self.vision_model = nn.Namespace()
        embeddings = self.vision_model.embeddings = nn.Namespace()
        embeddings.class_embedding = nn.parameter((dim,), dtype, device)
        embeddings.patch_embedding = nn.Conv2d(cfg["num_channels"], dim, patch, stride=patch,
                                               bias=False, **place)
        embeddings.position_embedding = nn.Embedding(positions, dim, **place)
        self.vision_model.pre_layrnorm = nn.LayerNorm(dim, eps=cfg["layer_norm_eps"], **place)
        self.vision_model.encoder = nn.Namespace()
        self.vision_model.encoder.layers = nn.ModuleList(
            [CLIPEncoderLayer(cfg, place, causal=False)
             for _ in range(cfg["num_hidden_layers"])])
        self.vision_model.post_layernorm = nn.LayerNorm(dim, eps=cfg["layer_norm_eps"], **place)
        if projection:
            self.visual_projection = nn.Linear(dim, cfg["projection_dim"], bias=False, **place)

    @property
    def image_size(self) -> int:
        return int(self.config["image_size"])

    @property
    def device(self) -> Device:
        return self.vision_model.embeddings.class_embedding.device

    @property
    def dtype(self) -> np.dtype:
        return self.vision_model.embeddings.class_embedding.dtype

    def forward(self, pixels: Any) -> Tensor:
        """The image embeddings (B, projection_dim): the last layer's class token,
        post-layer-normed and projected. transformers: `model(pixels).image_embeds`."""
        last = self.hidden_states(pixels, -1)
        batch, length, dim = last.shape
        first = concatenate([take_slice(last.reshape(batch * length, dim), b * length,
                                        b * length + 1) for b in range(batch)])
        return self.visual_projection(self.vision_model.post_layernorm(first))

    def hidden_states(self, pixels: Any, index: int = -2) -> Tensor:
        """transformers' `model(pixels, output_hidden_states=True).hidden_states[index]`:
        index 0 is the embeddings after pre_layrnorm, i the output of layer i; -2 (what
        IP-Adapter Plus reads) the penultimate layer's, not layer-normed."""
        layers = list(self.vision_model.encoder.layers)
        stop = index if index >= 0 else len(layers) + 1 + index
        if not 0 <= stop <= len(layers):
            raise ValueError(f"hidden state index {index} is outside this encoder's "
                             f"{len(layers) + 1} states")
        x = self._embeddings(pixels)
        for layer in layers[:stop]:
            x = layer(x)
        return x

    def _embeddings(self, pixels: Any) -> Tensor:
        emb = self.vision_model.embeddings
        if not isinstance(pixels, Tensor):
            pixels = asarray(np.asarray(pixels, np.float32), device=self.device)
        size = self.image_size
        if pixels.ndim != 4 or pixels.shape[1:] != (self.config["num_channels"], size, size):
            raise ValueError(f"this CLIP image encoder reads (B, 3, {size}, {size}) pictures "
                             f"(clip_pixels prepares them), got {pixels.shape}")
        if pixels.dtype != self.dtype:
            pixels = pixels.astype(self.dtype)
        patches = emb.patch_embedding(pixels)
        batch, dim = patches.shape[:2]
        tokens = patches.reshape(batch, dim, patches.shape[2] * patches.shape[3])
        tokens = permute(tokens, (0, 2, 1))
        cls = emb.class_embedding.reshape(1, 1, dim)
        x = concatenate([concatenate([cls] * batch), tokens], axis=1)
        positions = asarray(np.arange(x.shape[1], dtype=np.int32)[None], device=self.device)
        x = x + emb.position_embedding(positions)
        return self.vision_model.pre_layrnorm(x)


def clip_pixels(image: Any, size: int, *, device: Device | None = None) -> np.ndarray:
    """A picture (PIL, or uint8 HxW / HxWx3 / HxWx4) as the encoder reads it, (1, 3, size,
    size) float32: its short side resized to `size` (Pillow's bicubic; the long side
    int(size * long / short)), the centre `size` x `size` cut out, scaled to [0, 1] and
    normalized by CLIP_MEAN / CLIP_STD. transformers:
    `CLIPImageProcessor(size=size, crop_size=size)(image).pixel_values` (its Pillow backend)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        array = np.asarray(image.convert("RGB"))
    else:
        array = np.asarray(image)
        if array.dtype != np.uint8 or array.ndim not in (2, 3) or 0 in array.shape or (
                array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
            raise ValueError(f"an IP-Adapter image is a PIL image or uint8 HxW, HxWx3 or HxWx4; "
                             f"got {array.dtype} {array.shape}")
        if array.ndim == 2 or array.shape[2] == 1:
            array = np.repeat(array.reshape(*array.shape[:2], 1), 3, axis=2)
        array = np.ascontiguousarray(array[:, :, :3])
    height, width = array.shape[:2]
    short, long = min(height, width), max(height, width)
    new_long = int(size * long / short)
    new = (size, new_long) if height <= width else (new_long, size)
    if new != (height, width):
        array = resize(array, new, method="bicubic", device=device)
    top, left = (new[0] - size) // 2, (new[1] - size) // 2
    crop = array[top:top + size, left:left + size].astype(np.float32) * np.float32(1 / 255)
    pixels = (crop - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[None], np.float32)

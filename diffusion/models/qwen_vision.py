"""Qwen2.5-VL's vision tower, the reader of Qwen-Image-Edit's reference pictures: transformers'
`Qwen2_5_VisionTransformerPretrainedModel` (its parameter names) and the picture preparation of
its `Qwen2VLImageProcessor` (`qwen_vision_pixels`).

A picture becomes 14x14 patches (each repeated over the temporal patch of 2: a still picture is
a two-frame clip), embedded by a linear map (the checkpoint's Conv3d, whose kernel is its
stride). Tokens are ordered by 2x2 merge block, and blocks by attention window (`window_size`
pixels square; the last row and column of windows may be partial); the blocks at
`fullatt_block_indexes` attend over the whole picture, the rest within their window. The
rotary embedding is 2D: a quarter of each head's dimensions turn with the row, a quarter with
the column (transformers' `rotate_half` layout). The merger RMS-norms, joins each 2x2 block
into one token and maps it through a GELU MLP to the language model's width; the tokens go
back to row-major block order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, nn, split

from ..imaging import condition_picture
from .clip_vision import CLIP_MEAN, CLIP_STD
from .layers import Place
from .transformer_ops import RMSNorm, rope

__all__ = ["Qwen2_5_VisionTransformer", "axial_rotary", "pixel_limits", "qwen_vision_pixels",
           "smart_resize"]

_DEFAULTS: dict[str, Any] = {
    "depth": 32, "hidden_size": 1280, "hidden_act": "silu", "intermediate_size": 3420,
    "num_heads": 16, "in_channels": 3, "patch_size": 14, "spatial_merge_size": 2,
    "temporal_patch_size": 2, "window_size": 112, "out_hidden_size": 3584,
    "fullatt_block_indexes": (7, 15, 23, 31),
}


class _VisionAttention(nn.Module):
    def __init__(self, dim: int, heads: int, place: Place) -> None:
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, **place)
        self.proj = nn.Linear(dim, dim, **place)

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor], mask: Any) -> Tensor:
        length, dim = x.shape[1], x.shape[2]
        q, k, v = (part.reshape(1, length, dim)
                   for part in split(self.qkv(x).reshape(length, 3 * dim), 3, axis=1))
        q, k = rope(q, *rotary, self.heads, halves=True), rope(k, *rotary, self.heads, halves=True)
        return self.proj(nn.attention(q, k, v, mask=mask, heads=self.heads))


class _VisionMLP(nn.Module):
    def __init__(self, dim: int, hidden: int, place: Place) -> None:
        self.gate_proj = nn.Linear(dim, hidden, **place)
        self.up_proj = nn.Linear(dim, hidden, **place)
        self.down_proj = nn.Linear(hidden, dim, **place)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(nn.silu(self.gate_proj(x)) * self.up_proj(x))


class _VisionBlock(nn.Module):
    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        dim = cfg["hidden_size"]
        self.norm1 = RMSNorm(dim, 1e-6, place=place)
        self.norm2 = RMSNorm(dim, 1e-6, place=place)
        self.attn = _VisionAttention(dim, cfg["num_heads"], place)
        self.mlp = _VisionMLP(dim, cfg["intermediate_size"], place)

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor], mask: Any) -> Tensor:
        x = x + self.attn(self.norm1(x), rotary, mask)
        return x + self.mlp(self.norm2(x))


class _Layout:
    """Where each token goes for one batch of pictures' grids (t, h, w): the window order of
    the merge blocks, the (row, column) of each token in that order, and which window and
    which frame each token belongs to, a picture being one frame (transformers'
    `get_vision_window_index`, `get_vision_position_ids`)."""

    def __init__(self, grids: np.ndarray, merge: int, window_blocks: int) -> None:
        order, positions, windows, frames_of = [], [], [], []
        offset = window_id = frame_id = 0
        unit_rows, unit_cols = np.divmod(np.arange(merge * merge), merge)
        for frames, height, width in grids.tolist():
            block_h, block_w = height // merge, width // merge
            for frame in range(frames):
                for top in range(0, block_h, window_blocks):
                    for left in range(0, block_w, window_blocks):
                        for row in range(top, min(top + window_blocks, block_h)):
                            for col in range(left, min(left + window_blocks, block_w)):
                                order.append(offset + frame * block_h * block_w
                                             + row * block_w + col)
                                positions.append(np.stack([row * merge + unit_rows,
                                                           col * merge + unit_cols], 1))
                        windows.extend([window_id] * merge * merge * (
                            min(top + window_blocks, block_h) - top) * (
                            min(left + window_blocks, block_w) - left))
                        window_id += 1
                frames_of.extend([frame_id] * height * width)
                frame_id += 1
            offset += frames * block_h * block_w
        self.block_order = np.asarray(order, np.int64)
        self.positions = np.concatenate(positions).astype(np.float32)
        self.windows, self.frames = np.asarray(windows), np.asarray(frames_of)
        units = merge * merge
        self.token_order = (self.block_order[:, None] * units + np.arange(units)).reshape(-1)


class Qwen2_5_VisionTransformer(nn.Module):
    """Patches (N, 3 * 2 * 14 * 14) float32 and their grids (images, 3) of (t, h, w), as
    `qwen_vision_pixels` makes them, -> the image tokens (N / 4, out_hidden_size): what
    Qwen2.5-VL's language model reads in place of its image pad tokens. Config: transformers'
    `Qwen2_5_VLVisionConfig` fields (a Qwen2.5-VL config's `vision_config`).

    Parameter names are transformers' (`patch_embed.proj.weight`, `blocks.0.attn.qkv.weight`,
    `merger.ln_q.weight`, `merger.mlp.0.weight`); a `Qwen2_5_VLForConditionalGeneration`
    file's `visual.` (or `model.visual.`) prefix is for the loader to drop. transformers:
    `Qwen2_5_VisionTransformerPretrainedModel(pixel_values, grid_thw).pooler_output`."""

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **(config.get("vision_config") or config)}
        if cfg["hidden_act"] != "silu":
            raise ValueError(f"vision hidden_act {cfg['hidden_act']!r} is not supported; the "
                             "Qwen2.5-VL vision tower implements 'silu'")
        if cfg["hidden_size"] % (4 * cfg["num_heads"]):
            raise ValueError(f"vision hidden_size {cfg['hidden_size']} must divide into "
                             f"{cfg['num_heads']} heads of a multiple of 4 (2D rotary)")
        self.config = cfg
        place: Place = {"dtype": dtype, "device": device}
        dim, merge = cfg["hidden_size"], cfg["spatial_merge_size"]
        self.patch_embed = nn.Namespace()
        self.patch_embed.proj = nn.Namespace()
        self.patch_embed.proj.weight = nn.parameter(
            (dim, cfg["in_channels"], cfg["temporal_patch_size"], cfg["patch_size"],
             cfg["patch_size"]), dtype, device)
        self.blocks = nn.ModuleList([_VisionBlock(cfg, place) for _ in range(cfg["depth"])])
        joined = dim * merge * merge
        self.merger = nn.Namespace()
        self.merger.ln_q = RMSNorm(dim, 1e-6, place=place)
        self.merger.mlp = nn.ModuleList([nn.Linear(joined, joined, **place), nn.Identity(),
                                         nn.Linear(joined, cfg["out_hidden_size"], **place)])
        params = cfg.get("rope_parameters") or {}
        self.theta = float(params.get("rope_theta", 10000.0))

    @property
    def device(self) -> Device:
        return self.merger.ln_q.weight.device

    @property
    def dtype(self) -> np.dtype:
        return self.merger.ln_q.weight.dtype

    def _mask(self, groups: np.ndarray) -> Tensor:
        """The (L, L) mask of attention within each group of tokens, as a uint32 Tensor."""
        keep = (groups[:, None] == groups[None, :]).astype(np.uint32)
        return asarray(keep, device=self.device)

    def forward(self, pixel_values: Any, grid_thw: Any) -> Tensor:
        cfg = self.config
        grids = np.asarray(grid_thw, np.int64).reshape(-1, 3)
        merge, units = cfg["spatial_merge_size"], cfg["spatial_merge_size"] ** 2
        weight = self.patch_embed.proj.weight
        patch_dim = int(np.prod(weight.shape[1:]))
        count = int(np.prod(grids, axis=1).sum())
        pixels = np.asarray(pixel_values, np.float32)
        if pixels.shape != (count, patch_dim) or (grids[:, 1:] % merge).any():
            raise ValueError(f"the vision tower reads ({count}, {patch_dim}) patches for grids "
                             f"{grids.tolist()} (each side a multiple of {merge}), got "
                             f"{pixels.shape}; qwen_vision_pixels prepares them")
        layout = _Layout(grids, merge, cfg["window_size"] // merge // cfg["patch_size"])
        ordered = asarray(np.ascontiguousarray(pixels[layout.token_order]).astype(self.dtype),
                          device=self.device)
        x = nn.linear(ordered, weight.reshape(weight.shape[0], patch_dim)).reshape(1, count, -1)
        rotary = axial_rotary(layout.positions, cfg["hidden_size"] // cfg["num_heads"],
                              self.theta, self.device)
        # one upload of each mask for every block (the window one is L x L: a picture of
        # 1024 x 1024 pixels has 5476 patches, 120 MB)
        window = self._mask(layout.windows)
        whole = None if layout.frames[-1] == 0 else self._mask(layout.frames)
        full = set(cfg["fullatt_block_indexes"])
        for index, block in enumerate(self.blocks):
            x = block(x, rotary, whole if index in full else window)
        joined = self.merger.ln_q(x).reshape(count // units, -1)
        out = self.merger.mlp[2](nn.gelu(self.merger.mlp[0](joined)))
        return nn.embedding(np.argsort(layout.block_order).astype(np.int32), out)


def axial_rotary(positions: np.ndarray, head_dim: int, theta: float, device: Device
                 ) -> tuple[Tensor, Tensor]:
    """cos/sin (N, 1, head_dim) float32 (whatever the tower's dtype: the rotary reads float32
    tables) of the Qwen-VL towers' 2D rotary for token positions (N, 2) float32 of (row,
    column): a quarter of the dimensions turn with the row, a quarter with the column,
    repeated over the halves (transformers' `rotate_half` layout). transformers:
    `Qwen2_5_VisionRotaryEmbedding`, `Qwen3VLVisionRotaryEmbedding`."""
    half = head_dim // 2
    inv_freq = (1.0 / (np.float32(theta) ** (
        np.arange(0, half, 2, dtype=np.float32) / np.float32(half)))).astype(np.float32)
    angle = (positions[:, :, None] * inv_freq).reshape(len(positions), -1)
    angle = np.concatenate([angle, angle], axis=1).astype(np.float32)
    shape = (len(positions), 1, head_dim)
    return (asarray(np.cos(angle).reshape(shape), device=device),
            asarray(np.sin(angle).reshape(shape), device=device))


def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56,
                 max_pixels: int = 14 * 14 * 4 * 1280) -> tuple[int, int]:
    """The size a picture is resized to: each side a multiple of `factor`, the area within
    [min_pixels, max_pixels], the aspect kept as near as may be. transformers:
    `qwen2_vl.image_processing_qwen2_vl.smart_resize`."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"a reference picture of {width}x{height} is too narrow: its sides' "
                         "ratio must stay under 200")
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def pixel_limits(processor_config: dict[str, Any]) -> tuple[int, int]:
    """(min_pixels, max_pixels) of an image processor's preprocessor_config.json (its
    `min_pixels` / `max_pixels`, or its `size`'s shortest / longest edge), transformers'
    defaults where it says nothing."""
    size = processor_config.get("size") or {}
    return (int(processor_config.get("min_pixels") or size.get("shortest_edge") or 56 * 56),
            int(processor_config.get("max_pixels") or size.get("longest_edge")
                or 28 * 28 * 1280))


def qwen_vision_pixels(image: Any, *, patch_size: int = 14, merge_size: int = 2,
                       temporal_patch_size: int = 2, min_pixels: int = 56 * 56,
                       max_pixels: int = 28 * 28 * 1280, mean: Sequence[float] = CLIP_MEAN,
                       std: Sequence[float] = CLIP_STD, device: Device | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """A picture (PIL, or uint8 HxWx3 / HxWx4) -> (pixel_values (N, 3 * temporal * patch^2)
    float32, image_grid_thw (1, 3) int64): any transparency composited over white
    (`condition_picture`), resized by `smart_resize` (Pillow's bicubic), scaled to [0, 1],
    normalized by `mean` and `std` (CLIP's; Qwen3-VL's are 0.5), cut into patches in
    merge-block order. transformers: `Qwen2VLImageProcessor(...)(image)` (its Pillow
    backend, convert_to_rgb included)."""
    from gpustd.image import resize

    array = np.asarray(condition_picture(image, "a picture for the vision tower"))
    height, width = array.shape[:2]
    new = smart_resize(height, width, patch_size * merge_size, min_pixels, max_pixels)
    if new != (height, width):
        array = resize(array, new, method="bicubic", device=device)
    scaled = array.astype(np.float32) * np.float32(1 / 255)
    normed = (scaled - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    grid_h, grid_w = new[0] // patch_size, new[1] // patch_size
    patches = normed.transpose(2, 0, 1).reshape(
        3, grid_h // merge_size, merge_size, patch_size, grid_w // merge_size, merge_size,
        patch_size).transpose(1, 4, 2, 5, 0, 3, 6)
    patches = np.broadcast_to(patches[:, :, :, :, :, None],
                              (*patches.shape[:5], temporal_patch_size, *patches.shape[5:]))
    flat = patches.reshape(grid_h * grid_w, 3 * temporal_patch_size * patch_size * patch_size)
    return (np.ascontiguousarray(flat, np.float32),
            np.asarray([[1, grid_h, grid_w]], np.int64))

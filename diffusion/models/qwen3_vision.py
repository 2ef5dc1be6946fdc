"""Qwen3-VL's vision tower, the reader of Qwen-Image 2.1's condition pictures: transformers'
`Qwen3VLVisionModel` (its parameter names), and the picture preparation of Qwen3-VL's image
processor (`qwen3_vision_pixels`: `Qwen2VLImageProcessor` with Qwen3-VL's preprocessor_config).

Against Qwen2.5-VL's tower (qwen_vision.py): 16x16 patches (over the temporal patch of 2, a
still picture a two-frame clip) embedded by a linear map with a bias; a learned position
embedding (a square table of `num_position_embeddings` rows) resampled bilinearly, corners
aligned, to the picture's patch grid and added; LayerNorms; a GELU (tanh) MLP with biases;
every block attends over its whole picture (no windows; the tokens stay in the processor's
2x2 merge-block order, the same 2D rotary). The merger LayerNorms each token, joins each 2x2
block and maps it through a GELU MLP to the language model's width. After each block listed
in `deepstack_visual_indexes` a "deepstack" merger (joining first, then its LayerNorm) maps
the stream the same way: the language model adds those features to its first decoder layers'
outputs at the picture's tokens (qwen21_prompt.py).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, concatenate, nn
from gpustd import sum as reduce_sum

from .layers import Place
from .qwen_vision import _VisionAttention, axial_rotary, qwen_vision_pixels

__all__ = ["QWEN3_VL_PIXELS", "Qwen3VLVisionModel", "VisionFeatures", "pixel_options",
           "qwen3_vision_pixels"]

_DEFAULTS: dict[str, Any] = {
    "depth": 27, "hidden_size": 1152, "hidden_act": "gelu_pytorch_tanh",
    "intermediate_size": 4304, "num_heads": 16, "in_channels": 3, "patch_size": 16,
    "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": 3584,
    "num_position_embeddings": 2304, "deepstack_visual_indexes": (8, 16, 24),
}
_GELU = {"gelu_pytorch_tanh": "tanh", "gelu": "none"}
# Qwen3-VL's preprocessor_config.json: what its image processor does without one
QWEN3_VL_PIXELS: dict[str, Any] = {
    "patch_size": 16, "merge_size": 2, "temporal_patch_size": 2, "min_pixels": 256 * 256,
    "max_pixels": 4096 * 4096, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
_EPS = 1e-6


class VisionFeatures(NamedTuple):
    """The tower's output: `tokens` (N / 4, out_hidden_size), what the language model reads
    in place of the image pads, and `deepstack`, one (N / 4, out_hidden_size) per
    `deepstack_visual_indexes` entry, in its order."""

    tokens: Tensor
    deepstack: list[Tensor]


class _VisionMLP(nn.Module):
    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        self.approximate = _GELU[cfg["hidden_act"]]
        self.linear_fc1 = nn.Linear(cfg["hidden_size"], cfg["intermediate_size"], **place)
        self.linear_fc2 = nn.Linear(cfg["intermediate_size"], cfg["hidden_size"], **place)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_fc2(self.linear_fc1.gelu(x, approximate=self.approximate))


class _VisionBlock(nn.Module):
    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        dim = cfg["hidden_size"]
        self.norm1 = nn.LayerNorm(dim, _EPS, **place)
        self.norm2 = nn.LayerNorm(dim, _EPS, **place)
        self.attn = _VisionAttention(dim, cfg["num_heads"], place)
        self.mlp = _VisionMLP(cfg, place)

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor]) -> Tensor:
        x = x + self.attn(self.norm1(x), rotary, None)
        return x + self.mlp(self.norm2(x))


class _PatchMerger(nn.Module):
    """Each 2x2 block of tokens joined into one and mapped to the language model's width;
    `joined_norm`: the LayerNorm over the joined token (the deepstack mergers') rather than
    over each token before joining (the final merger's). transformers:
    `Qwen3VLVisionPatchMerger(use_postshuffle_norm=)`."""

    def __init__(self, cfg: dict[str, Any], joined_norm: bool, place: Place) -> None:
        dim = cfg["hidden_size"]
        self.joined = dim * cfg["spatial_merge_size"] ** 2
        self.joined_norm = joined_norm
        self.norm = nn.LayerNorm(self.joined if joined_norm else dim, _EPS, **place)
        self.linear_fc1 = nn.Linear(self.joined, self.joined, **place)
        self.linear_fc2 = nn.Linear(self.joined, cfg["out_hidden_size"], **place)

    def forward(self, x: Tensor) -> Tensor:
        x = (self.norm(x.reshape(-1, self.joined)) if self.joined_norm
             else self.norm(x).reshape(-1, self.joined))
        return self.linear_fc2(self.linear_fc1.gelu(x))


def _block_order(height: int, width: int, merge: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of each patch of an height x width grid in merge-block order (2x2
    blocks row-major, the patches of a block row-major), as the image processor lays them."""
    block_row, block_col, in_row, in_col = np.meshgrid(
        np.arange(height // merge), np.arange(width // merge), np.arange(merge),
        np.arange(merge), indexing="ij")
    return ((block_row * merge + in_row).reshape(-1), (block_col * merge + in_col).reshape(-1))


def _taps(size: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Per position of an axis of `size`, its two taps into a `side`-long table and their
    weights: bilinear with the corners aligned, in float32 as transformers' vision_utils
    `_interpolation_axis_taps_weights(mode="bilinear", align_corners=True)`."""
    source = (np.arange(size, dtype=np.float32) * np.float32(side - 1)) / np.float32(
        max(size - 1, 1))
    floor = np.floor(source)
    offsets = np.arange(2)
    taps = np.clip(floor.astype(np.int64)[:, None] + offsets, 0, side - 1)
    distance = np.abs(source[:, None] - floor[:, None] - offsets.astype(np.float32))
    return taps, np.maximum(np.float32(1) - distance, np.float32(0)).astype(np.float32)


class Qwen3VLVisionModel(nn.Module):
    """Patches (N, 3 * 2 * 16 * 16) float32 and their grids (pictures, 3) of (t, h, w), as
    `qwen3_vision_pixels` makes them, -> VisionFeatures: the picture tokens (N / 4,
    out_hidden_size) and the deepstack features. Config: transformers' `Qwen3VLVisionConfig`
    fields (a Qwen3-VL config's `vision_config`).

    Parameter names are transformers' (`patch_embed.proj.weight`, `pos_embed.weight`,
    `blocks.0.attn.qkv.weight`, `merger.norm.weight`, `deepstack_merger_list.0.linear_fc1.
    weight`); a `Qwen3VLForConditionalGeneration` file's `model.visual.` prefix is for the
    loader to drop. transformers: `Qwen3VLVisionModel(pixel_values, grid_thw)`'s
    `pooler_output` and `deepstack_features`."""

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **(config.get("vision_config") or config)}
        if cfg["hidden_act"] not in _GELU:
            raise ValueError(f"vision hidden_act {cfg['hidden_act']!r} is not supported; the "
                             f"Qwen3-VL vision tower implements {sorted(_GELU)}")
        if cfg["hidden_size"] % (4 * cfg["num_heads"]):
            raise ValueError(f"vision hidden_size {cfg['hidden_size']} must divide into "
                             f"{cfg['num_heads']} heads of a multiple of 4 (2D rotary)")
        side = round(cfg["num_position_embeddings"] ** 0.5)
        if side * side != cfg["num_position_embeddings"]:
            raise ValueError(f"num_position_embeddings {cfg['num_position_embeddings']} must "
                             "be a square (the learned position grid)")
        self.config, self.side = cfg, side
        self.deepstack_visual_indexes = [int(i) for i in cfg["deepstack_visual_indexes"]]
        place: Place = {"dtype": dtype, "device": device}
        dim = cfg["hidden_size"]
        self.patch_embed = nn.Namespace()
        self.patch_embed.proj = nn.Namespace()
        self.patch_embed.proj.weight = nn.parameter(
            (dim, cfg["in_channels"], cfg["temporal_patch_size"], cfg["patch_size"],
             cfg["patch_size"]), dtype, device)
        self.patch_embed.proj.bias = nn.parameter((dim,), dtype, device)
        self.pos_embed = nn.Embedding(cfg["num_position_embeddings"], dim, **place)
        self.blocks = nn.ModuleList([_VisionBlock(cfg, place) for _ in range(cfg["depth"])])
        self.merger = _PatchMerger(cfg, False, place)
        self.deepstack_merger_list = nn.ModuleList(
            [_PatchMerger(cfg, True, place) for _ in self.deepstack_visual_indexes])
        params = cfg.get("rope_parameters") or {}
        self.theta = float(params.get("rope_theta", 10000.0))

    @property
    def device(self) -> Device:
        return self.patch_embed.proj.weight.device

    @property
    def dtype(self) -> np.dtype:
        return self.patch_embed.proj.weight.dtype

    def forward(self, pixel_values: Any, grid_thw: Any) -> VisionFeatures:
        cfg = self.config
        grids = np.asarray(grid_thw, np.int64).reshape(-1, 3)
        merge = cfg["spatial_merge_size"]
        weight = self.patch_embed.proj.weight
        patch_dim = int(np.prod(weight.shape[1:]))
        count = int(np.prod(grids, axis=1).sum())
        pixels = np.asarray(pixel_values, np.float32)
        if pixels.shape != (count, patch_dim) or (grids[:, 1:] % merge).any() or (
                grids <= 0).any():
            raise ValueError(f"the vision tower reads ({count}, {patch_dim}) patches for grids "
                             f"{grids.tolist()} (each side a positive multiple of {merge}), "
                             f"got {pixels.shape}; qwen3_vision_pixels prepares them")
        tokens, deepstack = [], []
        start = 0
        # each frame of each picture attends only within itself: one pass each, no mask
        for frames, height, width in grids.tolist():
            for _ in range(frames):
                out = self._frame(pixels[start:start + height * width], height, width)
                tokens.append(out.tokens)
                deepstack.append(out.deepstack)
                start += height * width
        if len(tokens) == 1:
            return VisionFeatures(tokens[0], deepstack[0])
        return VisionFeatures(concatenate(tokens, axis=0),
                              [concatenate(list(level), axis=0) for level in zip(*deepstack,
                                                                                strict=True)])

    def _frame(self, pixels: np.ndarray, height: int, width: int) -> VisionFeatures:
        """One frame's patches (h * w, patch_dim) in merge-block order -> its features."""
        cfg = self.config
        weight = self.patch_embed.proj.weight
        count, dim = height * width, cfg["hidden_size"]
        x = nn.linear(asarray(np.ascontiguousarray(pixels).astype(self.dtype), device=self.device),
                      weight.reshape(dim, -1), self.patch_embed.proj.bias)
        rows, cols = _block_order(height, width, cfg["spatial_merge_size"])
        x = (x + self._positions(rows, cols, height, width)).reshape(1, count, dim)
        rotary = axial_rotary(np.stack([rows, cols], 1).astype(np.float32),
                              dim // cfg["num_heads"], self.theta, self.device)
        deepstack = []
        for index, block in enumerate(self.blocks):
            x = block(x, rotary)
            if index in self.deepstack_visual_indexes:
                merger = self.deepstack_merger_list[self.deepstack_visual_indexes.index(index)]
                deepstack.append(merger(x))
        return VisionFeatures(self.merger(x), deepstack)

    def _positions(self, rows: np.ndarray, cols: np.ndarray, height: int, width: int
                   ) -> Tensor:
        """The learned position table resampled to the grid at the patches (rows, cols):
        (h * w, hidden) in the tower's dtype, the four taps' rows weighted and summed.
        transformers: `(pos_embed(interp_indices) * interp_weights[:, :, None]).sum(1)`."""
        side = self.side
        row_taps, row_weights = _taps(height, side)
        col_taps, col_weights = _taps(width, side)
        indices = (row_taps[rows][:, :, None] * side + col_taps[cols][:, None, :]).reshape(-1)
        weights = (row_weights[rows][:, :, None] * col_weights[cols][:, None, :]).reshape(
            len(rows), 4, 1)
        taps = nn.embedding(indices.astype(np.int32), self.pos_embed.weight)
        weighted = taps.reshape(len(rows), 4, -1) * asarray(weights.astype(self.dtype),
                                                           device=self.device)
        return reduce_sum(weighted, axis=1)


def pixel_options(processor_config: dict[str, Any] | None) -> dict[str, Any]:
    """qwen3_vision_pixels' options from a Qwen3-VL preprocessor_config.json (None or missing
    keys: Qwen3-VL's, QWEN3_VL_PIXELS): the pixel limits from `size`'s shortest_edge /
    longest_edge (or the older min_pixels / max_pixels), the patch, merge and temporal sizes,
    the mean and std."""
    config = processor_config or {}
    size = config.get("size") or {}
    options = dict(QWEN3_VL_PIXELS)
    for key, found in (("min_pixels", config.get("min_pixels") or size.get("shortest_edge")),
                       ("max_pixels", config.get("max_pixels") or size.get("longest_edge")),
                       ("patch_size", config.get("patch_size")),
                       ("merge_size", config.get("merge_size")),
                       ("temporal_patch_size", config.get("temporal_patch_size")),
                       ("mean", config.get("image_mean")), ("std", config.get("image_std"))):
        if found is not None:
            options[key] = tuple(found) if key in ("mean", "std") else int(found)
    return options


def qwen3_vision_pixels(image: Any, options: dict[str, Any] | None = None, *,
                        device: Device | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A picture (PIL, or uint8 HxWx3 / HxWx4) -> (pixel_values (N, 3 * 2 * 16 * 16)
    float32, image_grid_thw (1, 3) int64): any transparency composited over white, resized to
    multiples of 32 within the pixel limits
    (Pillow's bicubic), scaled to [0, 1], normalized by Qwen3-VL's mean and std (0.5), cut
    into patches in merge-block order; `options` as pixel_options gives them. transformers:
    `Qwen2VLImageProcessor(**preprocessor_config)(image)` (its Pillow backend)."""
    return qwen_vision_pixels(image, **(options or QWEN3_VL_PIXELS), device=device)


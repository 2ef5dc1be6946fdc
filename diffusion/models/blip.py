"""BLIP's image captioner (Salesforce BLIP's `blip_decoder`, the network of the WebUI's
`model_base_caption_capfilt_large.pth`) with its checkpoint's names: a ViT image encoder
(`visual_encoder.*`, BLIP's `models/vit.py`) and a BERT text decoder reading its tokens
(`text_decoder.*`, diffusion.models.blip_text).

    model = BlipDecoder.from_state_dict(state)     # the .pth's "model" entries
    embeds = model.visual_encoder(pixels)          # (1, 3, 384, 384) -> (1, 577, 768)
    cache = model.text_decoder.start(embeds, rows=1)
    logits = model.text_decoder.step(cache, ids)   # (1, L) -> (1, vocab)

The ViT is timm's: a 16x16 patch convolution, a class token, learnt position embeddings,
pre-norm blocks (LayerNorm eps 1e-6, one fused q/k/v projection, exact GELU), a final norm over
every token. Sizes come from the weights (ViT-B or ViT-L); heads are 64 wide, as `create_vit`
makes them. The picture's size is `image_size` (the WebUI's 384): position embeddings for
another grid of patches are resized to it bicubically, as BLIP's `interpolate_pos_embed` does
when it loads a file (BLIP's captioning files are 384 already).
transformers: `BlipForConditionalGeneration` (its converted names differ; see the tests).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import Tensor, asarray, concatenate, nn, permute, split

from .blip_text import HEAD_DIM, BertLMHeadModel
from .layers import Place

__all__ = ["BlipDecoder", "VisionTransformer", "interpolate_positions"]

EPS = 1e-6
_CUBIC = -0.75  # torch's bicubic coefficient


def _cubic_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in): torch's bicubic resampling along one axis (align_corners False,
    indices clamped at the edges)."""
    a, scale = _CUBIC, size_in / size_out

    def inner(x: float) -> float:  # a sample within 1 of the point
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def outer(x: float) -> float:  # one from 1 to 2 away
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    matrix = np.zeros((size_out, size_in))
    for out in range(size_out):
        source = (out + 0.5) * scale - 0.5
        base = math.floor(source)
        t = source - base
        weights = (outer(t + 1), inner(t), inner(1 - t), outer(2 - t))
        for k, weight in enumerate(weights):
            matrix[out, min(max(base - 1 + k, 0), size_in - 1)] += weight
    return matrix


def interpolate_positions(pos_embed: np.ndarray, grid: int) -> np.ndarray:
    """Position embeddings (1, 1 + g*g, D) for a grid x grid of patches (1, 1 + grid^2, D):
    the class token's kept, the patches' resized bicubically. torch: BLIP's
    `interpolate_pos_embed` (`F.interpolate(mode="bicubic", align_corners=False)`)."""
    pos_embed = np.asarray(pos_embed, np.float32)
    size = round((pos_embed.shape[1] - 1) ** 0.5)
    if size == grid:
        return pos_embed
    dim = pos_embed.shape[2]
    patches = pos_embed[0, 1:].reshape(size, size, dim).astype(np.float64)
    matrix = _cubic_matrix(size, grid)
    resized = np.einsum("Hh,Ww,hwd->HWd", matrix, matrix, patches).reshape(grid * grid, dim)
    return np.concatenate([pos_embed[:, :1], resized[None].astype(np.float32)], axis=1)


class Block(nn.Module):
    def __init__(self, dim: int, hidden: int, place: Place) -> None:
        self.heads = dim // HEAD_DIM
        self.norm1 = nn.LayerNorm(dim, eps=EPS, **place)
        self.attn = nn.Namespace()
        self.attn.qkv = nn.Linear(dim, 3 * dim, **place)
        self.attn.proj = nn.Linear(dim, dim, **place)
        self.norm2 = nn.LayerNorm(dim, eps=EPS, **place)
        self.mlp = nn.Namespace()
        self.mlp.fc1 = nn.Linear(dim, hidden, **place)
        self.mlp.fc2 = nn.Linear(hidden, dim, **place)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = split(self.attn.qkv(self.norm1(x)), 3, axis=2)
        x = x + self.attn.proj(nn.attention(q, k, v, heads=self.heads))
        return x + self.mlp.fc2(nn.gelu(self.mlp.fc1(self.norm2(x))))


class VisionTransformer(nn.Module):
    """Pictures (B, 3, S, S), normalized, -> image embeddings (B, 1 + (S / patch)^2, dim)."""

    def __init__(self, *, dim: int, depth: int, hidden: int, patch: int, positions: int,
                 dtype: Any = np.float32, device: Device | None = None) -> None:
        if dim % HEAD_DIM:
            raise ValueError(f"BLIP's ViT has heads of {HEAD_DIM}; its width {dim} is not a "
                             "multiple of that")
        grid = round((positions - 1) ** 0.5)
        if grid * grid != positions - 1:
            raise ValueError(f"BLIP's ViT: {positions - 1} position embeddings are no square "
                             "grid of patches")
        place: Place = {"dtype": dtype, "device": device}
        self.cls_token = nn.parameter((1, 1, dim), dtype, device)
        self.pos_embed = nn.parameter((1, positions, dim), dtype, device)
        self.patch_embed = nn.Namespace()
        self.patch_embed.proj = nn.Conv2d(3, dim, patch, stride=patch, **place)
        self.blocks = nn.ModuleList([Block(dim, hidden, place) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=EPS, **place)
        self.image_size = grid * patch

    def forward(self, pixels: Any) -> Tensor:
        device = self.cls_token.device
        if not isinstance(pixels, Tensor):
            pixels = asarray(np.asarray(pixels, np.float32), device=device)
        size = self.image_size
        if pixels.ndim != 4 or pixels.shape[1:] != (3, size, size):
            raise ValueError(f"BLIP's ViT reads (B, 3, {size}, {size}) pictures, got "
                             f"{pixels.shape}")
        patches = self.patch_embed.proj(pixels)
        batch, dim = patches.shape[:2]
        tokens = permute(patches.reshape(batch, dim, -1), (0, 2, 1))
        x = concatenate([concatenate([self.cls_token] * batch), tokens], axis=1)
        x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


def _count(state: Mapping[str, Any], pattern: str) -> int:
    count = 0
    while pattern.format(count) in state:
        count += 1
    return count


class BlipDecoder(nn.Module):
    """`visual_encoder` (VisionTransformer) and `text_decoder` (BertLMHeadModel)."""

    def __init__(self, visual_encoder: VisionTransformer,
                 text_decoder: BertLMHeadModel) -> None:
        self.visual_encoder = visual_encoder
        self.text_decoder = text_decoder

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], *, image_size: int | None = None,
                        device: Device | None = None) -> BlipDecoder:
        """The captioner of a state dict with BLIP's keys (values numpy arrays, or a mapping
        with `shape(key)` read one tensor at a time), its sizes from the weights, for pictures
        of `image_size` (None: the size its position embeddings give). The head's weight and
        bias are the word embeddings and `cls.predictions.bias` where the file leaves them out
        (they are tied). ValueError naming what is missing."""
        shape = getattr(state, "shape", None)

        def size(key: str) -> tuple[int, ...]:
            if key not in state:
                raise ValueError(f"not a BLIP captioning state dict (no {key!r}); use "
                                 "model_base_caption_capfilt_large.pth")
            return tuple(shape(key)) if callable(shape) else np.shape(state[key])

        device = device or default_device()
        vit, text = "visual_encoder.", "text_decoder."
        dim = size(vit + "cls_token")[-1]
        patch, positions = size(vit + "patch_embed.proj.weight")[-1], size(vit + "pos_embed")[1]
        overrides = {}
        if image_size is not None and (image_size // patch) ** 2 + 1 != positions:
            grid = image_size // patch
            overrides[vit + "pos_embed"] = interpolate_positions(state[vit + "pos_embed"], grid)
            positions = grid * grid + 1
        visual = VisionTransformer(
            dim=dim, depth=_count(state, vit + "blocks.{}.norm1.weight"),
            hidden=size(vit + "blocks.0.mlp.fc1.weight")[0], patch=patch, positions=positions,
            device=device)
        layer = text + "bert.encoder.layer.{}."
        vocab, width = size(text + "bert.embeddings.word_embeddings.weight")
        decoder = BertLMHeadModel(
            vocab=vocab, dim=width, layers=_count(state, layer + "attention.self.query.weight"),
            intermediate=size(layer.format(0) + "intermediate.dense.weight")[0],
            positions=size(text + "bert.embeddings.position_embeddings.weight")[0],
            encoder_width=size(layer.format(0) + "crossattention.self.key.weight")[1],
            device=device)
        model = cls(visual, decoder)
        tied = {text + "cls.predictions.decoder.weight":
                text + "bert.embeddings.word_embeddings.weight",
                text + "cls.predictions.decoder.bias": text + "cls.predictions.bias"}
        wanted = dict(model.named_parameters())
        keys = {key: key if key in state else tied.get(key, key) for key in wanted}
        missing = [key for key, source in keys.items() if source not in state]
        if missing:
            raise ValueError(f"not a BLIP captioning state dict: {len(missing)} weights "
                             f"missing ({', '.join(missing[:3])}...); use "
                             "model_base_caption_capfilt_large.pth")
        model.load_state_dict(_Renamed(state, keys, overrides))
        return model


class _Renamed(Mapping[str, Any]):
    """`state` under the model's names (`keys`: model name -> state name), read lazily;
    `overrides` replace some of its entries."""

    def __init__(self, state: Mapping[str, Any], keys: dict[str, str],
                 overrides: dict[str, np.ndarray]) -> None:
        self._state, self._keys, self._overrides = state, keys, overrides

    def __getitem__(self, key: str) -> Any:
        if key in self._overrides:
            return self._overrides[key]
        return self._state[self._keys[key]]

    def __iter__(self) -> Any:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def shape(self, key: str) -> tuple[int, ...]:
        if key in self._overrides:
            return self._overrides[key].shape
        shape = getattr(self._state, "shape", None)
        source = self._keys[key]
        return tuple(shape(source)) if callable(shape) else np.shape(self._state[source])

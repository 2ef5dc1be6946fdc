"""The Z-Image transformer (diffusers' ZImageTransformer2DModel names): a single-stream DiT
over image patches and caption tokens. The image tokens pass `noise_refiner` blocks and the
caption tokens (an LLM's hidden states) `context_refiner` blocks on their own, then the two
streams run together through `layers`; 3-axis rotary positions (the caption along the first
axis, each image patch at (caption end, row, column)); a tanh-gated adaLN from the timestep
only (no pooled text); every stream padded to a multiple of 32 tokens with learned pad tokens.

Each picture of a batch runs as its own sequence, its caption unpadded: what diffusers' batch
with its attention masks computes, without the masks. A ControlNet (models.z_image_controlnet)
reads each picture's streams (`ZImageStream`) and gives residuals added after joint blocks.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, concatenate, nn, permute, take_slice

from .layers import Place
from .step_cache import BranchCache, run_blocks
from .transformer_ops import RMSNorm, cast, kept, rms_norm
from .z_image_blocks import ADALN, ZImageTransformerBlock, scaled

__all__ = ["ZImageStream", "ZImageTransformer2DModel", "patchify"]

_DEFAULTS: dict[str, Any] = {
    "all_patch_size": (2,), "all_f_patch_size": (1,), "in_channels": 16, "dim": 3840,
    "n_layers": 30, "n_refiner_layers": 2, "n_heads": 30, "n_kv_heads": 30, "norm_eps": 1e-5,
    "qk_norm": True, "cap_feat_dim": 2560, "siglip_feat_dim": None, "rope_theta": 256.0,
    "t_scale": 1000.0, "axes_dims": (32, 48, 48), "axes_lens": (1024, 512, 512),
}
_MULTIPLE = 32  # every stream is padded to a multiple of this many tokens
_KEPT_TABLES = 8  # rotary tables kept: three a picture, for a prompt and a negative prompt


def _padding(length: int) -> int:
    return -length % _MULTIPLE


def patchify(latents: Tensor, patch_size: int) -> Tensor:
    """(B, C, H, W) -> (B, H/p * W/p, p * p * C): row-major patches, each (ph, pw, C)
    flattened. diffusers: ZImageTransformer2DModel._patchify_image."""
    batch, channels, height, width = latents.shape
    rows, columns = height // patch_size, width // patch_size
    patches = permute(latents.reshape(batch, channels, rows, patch_size, columns, patch_size),
                      (0, 2, 4, 3, 5, 1))
    return patches.reshape(batch, rows * columns, -1)


@dataclass(frozen=True)
class ZImageStream:
    """One picture's streams as a ControlNet reads them: `index`, its row in the call's batch;
    `image` (1, Li, dim) its embedded patches padded with the pad token, before the noise
    refiner, `refined` after it; `caption` (1, Lc, dim) after the context refiner; the rotary
    tables of the image's and the joint sequence's positions; `temb` (1, 256)."""

    index: int
    image: Tensor
    refined: Tensor
    caption: Tensor
    image_rotary: tuple[Tensor, Tensor]
    joint_rotary: tuple[Tensor, Tensor]
    temb: Tensor


# a ControlNet's residuals for one picture's streams, by the joint block they follow
Hints = Callable[[ZImageStream], dict[int, Tensor]]
# picture i's tokens through some of the joint blocks: (i, x, blocks, index of the first)
Run = Callable[[int, Tensor, list[Any], int], Tensor]


class FinalLayer(nn.Module):
    """LayerNorm (no affine) scaled by 1 + linear(silu(temb)), then the projection to
    patches."""

    def __init__(self, dim: int, out: int, place: Place) -> None:
        self.linear = nn.Linear(dim, out, **place)
        self.adaLN_modulation = nn.ModuleList([nn.Identity(),
                                               nn.Linear(min(dim, ADALN), dim, **place)])

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        scale = self.adaLN_modulation[1](nn.silu(temb))
        batch, width = scale.shape
        normed = nn.layer_norm(x, None, None, eps=1e-6)
        return self.linear(scaled(normed, scale.reshape(batch, 1, width)))


class TimestepEmbedder(nn.Module):
    """mlp.0 (256 -> 1024), SiLU, mlp.2 (1024 -> min(dim, 256)) over [cos, sin] features."""

    def __init__(self, out: int, place: Place, mid: int = 1024) -> None:
        self.dtype = place["dtype"]
        self.mlp = nn.ModuleList([nn.Linear(256, mid, **place), nn.Identity(),
                                  nn.Linear(mid, out, **place)])

    def forward(self, t: Any, device: Device) -> Tensor:
        """`t` (B,) host numbers or a float32 Tensor (computed on the device: a capture's
        input)."""
        t = t if isinstance(t, Tensor) else np.asarray(t, np.float32)
        features = nn.timestep_embedding(t, 256, flip_sin_to_cos=True, downscale_freq_shift=0,
                                         dtype=self.dtype, device=device)
        return self.mlp[2](nn.silu(self.mlp[0](features)))


class ZImageTransformer2DModel(nn.Module):
    """Latents (B, C, H, W) and each picture's caption states -> the model output (B, C, H,
    W) (diffusers' sign: ZImagePipeline steps with its negation).

    Config: `transformer/config.json` of a Z-Image folder (diffusers' fields; the Omni
    variant's, with `siglip_feat_dim`, is models.z_image_omni's). Parameter names are diffusers'
    (`all_x_embedder.2-1.weight`, `noise_refiner.0.attention.to_q.weight`,
    `layers.0.adaLN_modulation.0.weight`, `cap_embedder.0.weight`, `x_pad_token`, ...).
    diffusers: `ZImageTransformer2DModel(list(x.unsqueeze(2)), t, captions).sample`, stacked
    and squeezed back to (B, C, H, W).
    """

    omni = False  # whether the config may (and must) set siglip_feat_dim

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        if (cfg["siglip_feat_dim"] is not None) != self.omni:
            raise ValueError("this is a Z-Image Omni transformer (siglip_feat_dim is set); load "
                             "it as Z-Image Omni" if cfg["siglip_feat_dim"] is not None else
                             "this Z-Image transformer has no siglip_feat_dim: it is not a "
                             "Z-Image Omni transformer; load it as Z-Image")
        dim, heads = cfg["dim"], cfg["n_heads"]
        if dim % heads or sum(cfg["axes_dims"]) != dim // heads:
            raise ValueError(f"axes_dims {tuple(cfg['axes_dims'])} must add up to the head "
                             f"dim {dim} / {heads}")
        self.config = cfg
        place: Place = {"dtype": dtype, "device": device}
        channels = cfg["in_channels"]
        self.all_x_embedder = nn.Namespace()
        self.all_final_layer = nn.Namespace()
        for patch, frames in zip(cfg["all_patch_size"], cfg["all_f_patch_size"]):
            width = frames * patch * patch * channels
            setattr(self.all_x_embedder, f"{patch}-{frames}", nn.Linear(width, dim, **place))
            setattr(self.all_final_layer, f"{patch}-{frames}", FinalLayer(dim, width, place))
        refiners = range(cfg["n_refiner_layers"])
        self.noise_refiner = nn.ModuleList(
            [ZImageTransformerBlock(cfg, place, modulation=True) for _ in refiners])
        self.context_refiner = nn.ModuleList(
            [ZImageTransformerBlock(cfg, place, modulation=False) for _ in refiners])
        self.t_embedder = TimestepEmbedder(min(dim, ADALN), place)
        self.cap_embedder: nn.ModuleList[Any] = nn.ModuleList([
            RMSNorm(cfg["cap_feat_dim"], cfg["norm_eps"], place=place),
            nn.Linear(cfg["cap_feat_dim"], dim, **place)])
        self.x_pad_token = nn.parameter((1, dim), **place)
        self.cap_pad_token = nn.parameter((1, dim), **place)
        self.layers = nn.ModuleList(
            [ZImageTransformerBlock(cfg, place, modulation=True) for _ in range(cfg["n_layers"])])
        self._tables: dict[tuple[Any, ...], tuple[Tensor, Tensor]] = {}

    @property
    def device(self) -> Device:
        return self.x_pad_token.device

    @property
    def dtype(self) -> np.dtype:
        return self.x_pad_token.dtype

    def rotary(self, ids: np.ndarray) -> tuple[Tensor, Tensor]:
        """cos/sin (L, 1, head_dim) of integer positions ids (L, 3), each axis's angles
        (theta^(-2j/d), float64, then float32) repeated over its pairs. diffusers:
        `RopeEmbedder(ids)` (complex64 `torch.polar` of the float32 angles). Kept on the
        device for the next steps (a step asks for three a picture: caption, image, both;
        _KEPT_TABLES covers a prompt's and a negative prompt's)."""
        ids = np.asarray(ids, np.int64)
        return kept(self._tables, (ids.shape, ids.tobytes(), self.device),
                    lambda: self._rotary(ids), _KEPT_TABLES)

    def _rotary(self, ids: np.ndarray) -> tuple[Tensor, Tensor]:
        cfg = self.config
        for axis, limit in enumerate(cfg["axes_lens"]):
            if ids[:, axis].max(initial=0) >= limit:
                raise ValueError(f"position {int(ids[:, axis].max())} on rotary axis {axis} is "
                                 f"past this model's {limit}; use a shorter prompt or a smaller "
                                 "picture")
        angles = []
        for axis, dim in enumerate(cfg["axes_dims"]):
            freqs = 1.0 / cfg["rope_theta"] ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
            angle = np.outer(ids[:, axis].astype(np.float64), freqs).astype(np.float32)
            angles.append(np.repeat(angle, 2, axis=1))
        angle = np.concatenate(angles, axis=1)
        shape = (angle.shape[0], 1, angle.shape[1])
        return (asarray(np.cos(angle).reshape(shape), device=self.device),
                asarray(np.sin(angle).reshape(shape), device=self.device))

    def _joint(self, streams: list[tuple[Tensor, tuple[Tensor, Tensor], Tensor]],
               cache: BranchCache | None, hints: list[dict[int, Tensor]]) -> list[Tensor]:
        """Each picture's (tokens, rotary, temb) through `layers`, its `hints` (a
        ControlNet's residuals by block) added after their blocks (`_through`)."""
        hints = hints or [{} for _ in streams]

        def run(i: int, x: Tensor, blocks: list[Any], start: int) -> Tensor:
            _, rotary, emb = streams[i]
            for index, block in enumerate(blocks, start):
                x = block(x, rotary, emb)
                if index in hints[i]:
                    x = x + hints[i][index]
            return x

        return self._through([x for x, _, _ in streams], run, cache)

    def _through(self, xs: list[Tensor], run: Run, cache: BranchCache | None) -> list[Tensor]:
        """Each picture's tokens `xs[i]` through `layers`, `run(i, x, blocks, start)` taking
        picture i's tokens through `blocks` (`layers[start:]`'s first ones). With a step cache
        the first block is the head and its residual the one compared, the later blocks the
        tail; every picture's tokens lie side by side, so that one decision per call is made
        over all of them, as diffusers' batch makes it (which also counts the padding up to
        the longest picture's sequence in)."""
        layers = list(self.layers)
        if cache is None:
            return [run(i, x, layers, 0) for i, x in enumerate(xs)]
        bounds = np.cumsum([0] + [x.shape[1] for x in xs])

        def apart(x: Tensor) -> list[Tensor]:
            return [x] if len(xs) == 1 else [
                take_slice(x, int(a), int(b), axis=1) for a, b in itertools.pairwise(bounds)]

        def each(x: Tensor, start: int) -> Tensor:
            parts = [run(i, part, layers[start:] if start else layers[:1], start)
                     for i, part in enumerate(apart(x))]
            return parts[0] if len(parts) == 1 else concatenate(parts, axis=1)

        def head(x: Tensor, context: Any) -> tuple[Tensor, Any]:
            return each(x, 0), context

        def tail(x: Tensor, context: Any) -> Tensor:
            return each(x, 1)

        joined = xs[0] if len(xs) == 1 else concatenate(xs, axis=1)
        return apart(run_blocks(cache, joined, None, head, tail))

    def _padded(self, tokens: Tensor, pad_token: Tensor) -> Tensor:
        """(1, L, dim) with the pad token appended up to a multiple of 32 tokens."""
        count = _padding(tokens.shape[1])
        if not count:
            return tokens
        pad = pad_token.reshape(1, 1, -1)
        return concatenate([tokens, *([pad] * count)], axis=1)

    def _caption(self, states: Tensor) -> Tensor:
        """cap_embedder over (L, cap_feat_dim) states (any float dtype; the RMS norm reads
        them as they are, an LLM's float32 states included) -> (1, L, dim)."""
        norm, linear = self.cap_embedder[0], self.cap_embedder[1]
        normed = rms_norm(states, norm.weight, norm.eps)
        return linear(cast(normed, self.dtype)).reshape(1, states.shape[0], -1)

    def forward(self, latents: Tensor, timestep: Any, captions: Sequence[Tensor], *,
                patch_size: int = 2, cache: BranchCache | None = None,
                control: Hints | None = None) -> Tensor:
        """latents (B, C, H, W), H and W multiples of `patch_size`; timestep (B,) host
        numbers or a float32 Tensor (a replayed step's) in [0, 1] (1 the clean end:
        ZImagePipeline passes (1000 - t) / 1000); captions: B Tensors (L_i, cap_feat_dim),
        each picture's caption states without padding. `cache`: a step cache branch
        (`step_cache.StepCache.branch()`) the joint blocks run through, its calls in step
        order (the refiners always run). `control`: each picture's ControlNet residuals from
        its streams (diffusers: `controlnet_block_samples`, added after the blocks they
        name)."""
        batch, channels, height, width = latents.shape
        if len(captions) != batch:
            raise ValueError(f"{len(captions)} captions for {batch} latents; give one each")
        if height % patch_size or width % patch_size:
            raise ValueError(f"latents of {height} x {width} are not multiples of the patch "
                             f"size {patch_size}; use a picture size divisible by "
                             f"{8 * patch_size}")
        key = f"{patch_size}-1"
        embedder = getattr(self.all_x_embedder, key, None)
        if embedder is None:
            raise ValueError(f"this transformer has no patch size {patch_size}")
        final = getattr(self.all_final_layer, key)
        rows, columns = height // patch_size, width // patch_size
        # 1. the timestep embedding; patches (row-major, each (ph, pw, C) flattened)
        scale = np.float32(self.config["t_scale"])
        t = (timestep.reshape(-1) * scale if isinstance(timestep, Tensor)
             else np.asarray(timestep, np.float32).reshape(-1) * scale)
        temb = cast(self.t_embedder(t, self.device), self.dtype)
        patches = embedder(patchify(latents, patch_size))
        grid = np.stack(np.meshgrid(np.arange(rows), np.arange(columns), indexing="ij"),
                        axis=-1).reshape(-1, 2)
        streams, hints = [], []
        for i, states in enumerate(captions):
            emb = take_slice(temb, i, i + 1, axis=0)
            # 2. the caption's stream: positions 1, 2, ... (its padding continues them)
            cap_length = states.shape[0] + _padding(states.shape[0])
            cap_ids = np.zeros((cap_length, 3), np.int64)
            cap_ids[:, 0] = np.arange(1, cap_length + 1)
            cap_rotary = self.rotary(cap_ids)
            cap = self._padded(self._caption(states), self.cap_pad_token)
            for block in self.context_refiner:
                cap = block(cap, cap_rotary, None)
            # 3. the image's stream: (caption end, row, column); its padding at (0, 0, 0)
            image_ids = np.zeros((rows * columns + _padding(rows * columns), 3), np.int64)
            image_ids[: rows * columns, 0] = cap_length + 1
            image_ids[: rows * columns, 1:] = grid
            image_rotary = self.rotary(image_ids)
            image = x = self._padded(take_slice(patches, i, i + 1, axis=0), self.x_pad_token)
            for block in self.noise_refiner:
                x = block(x, image_rotary, emb)
            # 4. both together, image first (a ControlNet's residuals from the streams)
            joint_rotary = self.rotary(np.concatenate([image_ids, cap_ids]))
            streams.append((concatenate([x, cap], axis=1), joint_rotary, emb))
            if control is not None:
                hints.append(control(ZImageStream(i, image, x, cap, image_rotary, joint_rotary,
                                                  emb)))
        # 5. the joint blocks; the final layer over the image's patches
        outs = [final(take_slice(x, 0, rows * columns, axis=1), emb)
                for x, (_, _, emb) in zip(self._joint(streams, cache, hints), streams,
                                          strict=True)]
        # 6. patches back to latents
        out = concatenate(outs, axis=0).reshape(batch, rows, columns, patch_size, patch_size,
                                                channels)
        return permute(out, (0, 5, 1, 3, 2, 4)).reshape(batch, channels, height, width)

"""The Z-Image Omni transformer (diffusers' ZImageTransformer2DModel with `siglip_feat_dim`
set, run in its omni mode): Z-Image's transformer (models.z_image) whose sequence also holds
condition pictures, each as its VAE latents' patches beside the noisy target's and as its
SigLIP2 features (`siglip_embedder`, `siglip_refiner`, `siglip_pad_token`), the caption cut
into one piece per picture around them (the pipeline's vision tokens). One sequence a picture,
[caption pieces, images, SigLIP features], each part padded to a multiple of 32 tokens; the
condition pictures' tokens (and the caption pieces before them) are modulated by the clean
timestep's embedding (t = 1), the rest by the step's: diffusers' per-token `noise_mask`.

Positions as diffusers' `patchify_and_embed_omni` gives them, its quirks kept (the model was
trained with them): caption piece j starts at 1 + the lengths of the pieces before it plus 2
a piece; image j sits at (the end of piece j, row, column), its SigLIP features one further
with rows and columns scaled onto the latents' grid (latent rows - 1, truncated); a caption
piece's padding positions are appended after the padded piece's own, so that with more than
one piece the later pieces' tokens take positions shifted by the earlier pieces' padding.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, concatenate, nn, permute, take_slice

from .layers import Place
from .step_cache import BranchCache
from .transformer_ops import RMSNorm, cast, rms_norm
from .z_image import _MULTIPLE, ZImageTransformer2DModel, _padding, patchify
from .z_image_blocks import CleanModulation, ZImageTransformerBlock

__all__ = ["OmniLayout", "ZImageOmniTransformer2DModel", "omni_layout"]


class OmniLayout(typing.NamedTuple):
    """One picture's sequence on the host: positions (L, 3) and noise flags (L,) of its
    caption pieces, images and SigLIP parts, each padded to 32 tokens; `target`, the target
    image's first token within the images part."""

    cap_ids: np.ndarray
    cap_noisy: np.ndarray
    image_ids: np.ndarray
    image_noisy: np.ndarray
    siglip_ids: np.ndarray
    siglip_noisy: np.ndarray
    target: int


def _grid(rows: int, columns: int) -> np.ndarray:
    return np.stack(np.meshgrid(np.arange(rows), np.arange(columns), indexing="ij"),
                    axis=-1).reshape(-1, 2)


def omni_layout(caption_lengths: Sequence[int], image_grids: Sequence[tuple[int, int]],
                siglip_grids: Sequence[tuple[int, int]], patch_size: int) -> OmniLayout:
    """The positions and noise flags of a picture's sequence: caption pieces of
    `caption_lengths` tokens, images of `image_grids` latents (rows, columns) the target last,
    SigLIP feature grids of the condition pictures (none without conditions). diffusers:
    `ZImageTransformer2DModel.patchify_and_embed_omni` (see the module's docstring)."""
    conditions = len(image_grids) - 1
    flags = [0] * conditions + [1]  # diffusers' image_noise_mask
    ids, noisy, ends, start = [], [], [], 1
    for j, length in enumerate(caption_lengths):
        padded, pad = length + _padding(length), _padding(length)
        piece = np.zeros((padded + pad, 3), np.int64)
        piece[:padded, 0] = np.arange(start, start + padded)
        ids.append(piece)
        noisy += [flags[j] if j < len(flags) else 1] * padded
        start += length
        ends.append(start)
        start += 2  # the image's and its SigLIP features' positions
    cap_ids = np.concatenate(ids)[: len(noisy)]
    ids, image_noisy, target = [], [], 0
    for j, (rows, columns) in enumerate(image_grids):
        tokens = (rows // patch_size) * (columns // patch_size)
        part = np.zeros((tokens + _padding(tokens), 3), np.int64)
        part[:tokens, 0] = ends[j]
        part[:tokens, 1:] = _grid(rows // patch_size, columns // patch_size)
        target = sum(len(i) for i in ids)
        ids.append(part)
        image_noisy += [flags[j]] * len(part)
    image_ids = np.concatenate(ids)
    ids, siglip_noisy = [], []
    for j, (rows, columns) in enumerate(siglip_grids):
        tokens = rows * columns
        part = np.zeros((tokens + _padding(tokens), 3), np.int64)
        grid = _grid(rows, columns).astype(np.float32)
        # float32 as diffusers scales them, then truncated to integers
        latent_rows, latent_columns = image_grids[j]
        grid[:, 0] = grid[:, 0] / np.float32(max(rows - 1, 1)) * np.float32(latent_rows - 1)
        grid[:, 1] = (grid[:, 1] / np.float32(max(columns - 1, 1))
                      * np.float32(latent_columns - 1))
        part[:tokens, 0] = ends[j] + 1
        part[:tokens, 1:] = grid.astype(np.int64)
        ids.append(part)
        siglip_noisy += [0] * len(part)
    if siglip_grids:  # the target's SigLIP place: padding only
        ids.append(np.zeros((_MULTIPLE, 3), np.int64))
        siglip_noisy += [1] * _MULTIPLE
    siglip_ids = np.concatenate(ids) if ids else np.zeros((0, 3), np.int64)
    return OmniLayout(cap_ids, np.array(noisy, np.int64), image_ids,
                      np.array(image_noisy, np.int64), siglip_ids,
                      np.array(siglip_noisy, np.int64), target)


class ZImageOmniTransformer2DModel(ZImageTransformer2DModel):
    """Target latents (B, C, H, W), each picture's caption pieces, condition latents and
    their SigLIP2 features -> the model output for the targets (B, C, H, W) (diffusers'
    sign). Config: `transformer/config.json` of a Z-Image Omni folder (`siglip_feat_dim`
    set); parameter names diffusers' (`siglip_embedder.1.weight`,
    `siglip_refiner.0.attention.to_q.weight`, `siglip_pad_token`, Z-Image's the rest).
    diffusers: `ZImageTransformer2DModel(x=[conditions + [target]], t, cap_feats=pieces,
    siglip_feats=[siglips + [None]], image_noise_mask=[[0] * N + [1]])`."""

    omni = True

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        super().__init__(config, dtype=dtype, device=device)
        cfg = self.config
        place: Place = {"dtype": dtype, "device": device}
        features = cfg["siglip_feat_dim"]
        self.siglip_embedder: nn.ModuleList[Any] = nn.ModuleList([
            RMSNorm(features, cfg["norm_eps"], place=place),
            nn.Linear(features, cfg["dim"], **place)])
        self.siglip_refiner = nn.ModuleList(
            [ZImageTransformerBlock(cfg, place, modulation=False)
             for _ in range(cfg["n_refiner_layers"])])
        self.siglip_pad_token = nn.parameter((1, cfg["dim"]), **place)

    def _siglip(self, features: Tensor) -> Tensor:
        """(h, w, D) SigLIP2 features -> (1, h * w, dim) embedded, padded with the pad
        token. The features are read as diffusers reads them: `permute(2, 0, 1)` and then
        reshaped to (h * w, D), which scrambles features across tokens (trained so)."""
        rows, columns, width = features.shape
        flat = permute(cast(features, self.dtype), (2, 0, 1)).reshape(rows * columns, width)
        norm, linear = self.siglip_embedder[0], self.siglip_embedder[1]
        embedded = linear(rms_norm(flat, norm.weight, norm.eps)).reshape(1, rows * columns, -1)
        return self._padded(embedded, self.siglip_pad_token)

    def _picked(self, clean: CleanModulation, noisy: np.ndarray) -> Any:
        """What the modulated blocks take for the noise flags `noisy`: None where every
        token is noisy, else the clean modulations and the flags (per-token modulation)."""
        return None if noisy.all() else (clean, clean.flags(noisy, self.dtype, self.device))

    def forward(self, latents: Tensor, timestep: Any,  # type: ignore[override]
                captions: Sequence[Sequence[Tensor]], conditions: Sequence[Tensor] = (),
                siglips: Sequence[Tensor] = (), *, patch_size: int = 2,
                clean: CleanModulation | None = None, cache: BranchCache | None = None
                ) -> Tensor:
        """latents (B, C, H, W); timestep (B,) in [0, 1] (1 the clean end), host numbers or a
        float32 Tensor (a replayed step's); captions: B lists
        of caption pieces (L_j, cap_feat_dim), N + 2 pieces with N conditions, one without;
        conditions: N condition latents (1, C, h_j, w_j) and siglips: their SigLIP2 features
        (h, w, siglip_feat_dim), the same for every picture of the batch (as diffusers'
        pipeline passes them). `clean`: the clean timestep's modulations, kept from the
        denoising's earlier steps (a new CleanModulation at its start; None: made for this
        call alone). `cache`: a step cache branch (`step_cache.StepCache.branch()`) the main
        `layers` run through, as Z-Image's: the first of them the head, its residual over the
        whole sequence (caption pieces, images, SigLIP features, padding included) the one
        compared; the three refiners always run (diffusers' hook takes `layers` alone)."""
        batch, channels, height, width = latents.shape
        if len(captions) != batch:
            raise ValueError(f"{len(captions)} captions for {batch} latents; give one each")
        if len(siglips) != len(conditions):
            raise ValueError(f"{len(siglips)} SigLIP features for {len(conditions)} condition "
                             "pictures; give one each")
        pieces = len(conditions) + 2 if conditions else 1
        if any(len(c) != pieces for c in captions):
            raise ValueError(f"a caption in {pieces} pieces is needed with {len(conditions)} "
                             "condition pictures")
        grids = [(c.shape[2], c.shape[3]) for c in conditions] + [(height, width)]
        if any(rows % patch_size or columns % patch_size for rows, columns in grids):
            raise ValueError(f"latents not multiples of the patch size {patch_size}; use "
                             f"pictures of sides divisible by {8 * patch_size}")
        key = f"{patch_size}-1"
        embedder = getattr(self.all_x_embedder, key, None)
        if embedder is None:
            raise ValueError(f"this transformer has no patch size {patch_size}")
        final = getattr(self.all_final_layer, key)
        scale = np.float32(self.config["t_scale"])
        t = (timestep.reshape(-1) * scale if isinstance(timestep, Tensor)
             else np.asarray(timestep, np.float32).reshape(-1) * scale)
        temb = cast(self.t_embedder(t, self.device), self.dtype)
        clean = CleanModulation() if clean is None else clean
        if clean.temb is None:
            clean.temb = cast(self.t_embedder(np.full(1, self.config["t_scale"], np.float32),
                                              self.device), self.dtype)
        # the condition pictures' patches and SigLIP features, shared by every picture
        fixed = [self._padded(embedder(patchify(c, patch_size)), self.x_pad_token)
                 for c in conditions]
        features = [self._siglip(s) for s in siglips]
        if siglips:  # the target's place among them: pad tokens only
            features.append(concatenate([self.siglip_pad_token.reshape(1, 1, -1)] * _MULTIPLE,
                                        axis=1))
        targets = embedder(patchify(latents, patch_size))
        rows, columns = height // patch_size, width // patch_size
        streams = []
        for i, states in enumerate(captions):
            emb = take_slice(temb, i, i + 1, axis=0)
            layout = omni_layout([s.shape[0] for s in states], grids,
                                 [(s.shape[0], s.shape[1]) for s in siglips], patch_size)
            cap_rotary = self.rotary(layout.cap_ids)
            cap = concatenate([self._padded(self._caption(s), self.cap_pad_token)
                               for s in states], axis=1)
            for block in self.context_refiner:
                cap = block(cap, cap_rotary, None)
            target = self._padded(take_slice(targets, i, i + 1, axis=0), self.x_pad_token)
            image = concatenate([*fixed, target], axis=1) if fixed else target
            image_rotary, picked = self.rotary(layout.image_ids), self._picked(
                clean, layout.image_noisy)
            for block in self.noise_refiner:
                image = block(image, image_rotary, emb, picked)
            parts = [cap, image]
            if features:
                siglip = concatenate(features, axis=1)
                siglip_rotary = self.rotary(layout.siglip_ids)
                for block in self.siglip_refiner:
                    siglip = block(siglip, siglip_rotary, None)
                parts.append(siglip)
            ids = np.concatenate([layout.cap_ids, layout.image_ids, layout.siglip_ids])
            noisy = np.concatenate([layout.cap_noisy, layout.image_noisy, layout.siglip_noisy])
            streams.append((concatenate(parts, axis=1), self.rotary(ids), emb,
                            self._picked(clean, noisy), cap.shape[1] + layout.target))

        def run(i: int, x: Tensor, blocks: list[Any], start: int) -> Tensor:
            _, rotary, emb, picked, _ = streams[i]
            for block in blocks:
                x = block(x, rotary, emb, picked)
            return x

        # the main blocks (through the cache), the final layer over the target's patches
        outs = [final(take_slice(x, start, start + rows * columns, axis=1), emb)
                for x, (_, _, emb, _, start) in zip(
                    self._through([s[0] for s in streams], run, cache), streams, strict=True)]
        out = concatenate(outs, axis=0).reshape(batch, rows, columns, patch_size, patch_size,
                                                channels)
        return permute(out, (0, 5, 1, 3, 2, 4)).reshape(batch, channels, height, width)

"""Wan 2.2 Animate's transformer (diffusers' WanAnimateTransformer3DModel names): the Wan 2.1
image-to-video transformer (models.wan; CLIP image cross-attention) over the noisy latents,
the mask and the reference latents (2 * latent_channels + 4 channels), with two more inputs.
The pose video's latents (every latent frame but the first, the reference) are embedded by
`pose_patch_embedding` and added to the video's embedded patches. The face video (pixels, one
crop per frame) goes through the motion encoder and the face encoder (models.
wan_animate_encoders) into face tokens; after every `inject_face_latents_blocks`-th block (0,
5, 10, ...) a face block cross-attends each latent frame's patches to its frame's face tokens
and adds the result."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, concatenate, nn, permute, take_slice, zeros

from .layers import Place
from .transformer_ops import RMSNorm, cast, head_norm
from .wan import WanStream, WanTransformer3DModel, wan_patches
from .wan_animate_encoders import WanAnimateFaceEncoder, WanAnimateMotionEncoder
from .wan_embeddings import PatchEmbedding

__all__ = ["WanAnimateFaceBlockCrossAttention", "WanAnimateTransformer3DModel"]

_ANIMATE_DEFAULTS: dict[str, Any] = {
    "in_channels": 36, "latent_channels": 16, "out_channels": 16, "image_dim": 1280,
    "motion_encoder_channel_sizes": None, "motion_encoder_size": 512, "motion_style_dim": 512,
    "motion_dim": 20, "motion_encoder_dim": 512, "face_encoder_hidden_dim": 1024,
    "face_encoder_num_heads": 4, "inject_face_latents_blocks": 5,
    "motion_encoder_batch_size": 8,
}


class WanAnimateFaceBlockCrossAttention(nn.Module):
    """Patches (B, S, dim) and face tokens (B, T, N, dim) -> (B, S, dim): both LayerNormed
    (no affine), to_q / to_k / to_v, q and k RMS-normed per head (norm_q, norm_k over the
    head dim), the patches cut into T equal runs (the latent frames), each run attending to
    its frame's N tokens; to_out. diffusers: `WanAnimateFaceBlockCrossAttention`."""

    def __init__(self, dim: int, heads: int, eps: float, place: Place) -> None:
        self.heads, self.eps = heads, eps
        self.to_q = nn.Linear(dim, dim, **place)
        self.to_k = nn.Linear(dim, dim, **place)
        self.to_v = nn.Linear(dim, dim, **place)
        self.to_out = nn.Linear(dim, dim, **place)
        self.norm_q = RMSNorm(dim // heads, eps, place=place)
        self.norm_k = RMSNorm(dim // heads, eps, place=place)

    def forward(self, x: Tensor, face: Tensor) -> Tensor:
        batch, tokens, dim = x.shape
        _, frames, count, _ = face.shape
        head_dim = dim // self.heads
        q = self.to_q(nn.layer_norm(x, None, None, eps=self.eps))
        kv = nn.layer_norm(face.reshape(batch, frames * count, dim), None, None, eps=self.eps)
        k, v = nn.Linear.each(kv, [self.to_k, self.to_v])
        q = head_norm(self.norm_q, q, self.heads, head_dim)
        k = head_norm(self.norm_k, k, self.heads, head_dim)
        runs = batch * frames  # diffusers: query.unflatten(1, (T, -1)).flatten(0, 1)
        out = nn.attention(q.reshape(runs, tokens // frames, dim), k.reshape(runs, count, dim),
                           v.reshape(runs, count, dim), heads=self.heads)
        return self.to_out(out.reshape(batch, tokens, dim))


def _batched(x: Tensor, batch: int, what: str) -> Tensor:
    """x (1 or batch, ...) made (batch, ...): one given for every video repeated."""
    if x.shape[0] == batch:
        return x
    if x.shape[0] != 1:
        raise ValueError(f"{what} for {x.shape[0]} videos and a batch of {batch}: give one or "
                         "one per video")
    return concatenate([x] * batch, axis=0)


class WanAnimateTransformer3DModel(WanTransformer3DModel):
    """Latents (B, 2 * latent_channels + 4, F, H, W), UMT5 states, CLIP image states, pose
    latents (B, latent_channels, F - 1, H, W) and face pixels (B, 3, T, size, size) -> the
    flow (B, out_channels, F, H, W).

    Config: `transformer/config.json` of a Wan 2.2 Animate diffusers folder
    (WanTransformer3DModel's fields, `latent_channels`, the motion encoder's `motion_*`, the
    face encoder's `face_encoder_*`, `inject_face_latents_blocks`). Parameter names are
    diffusers': WanTransformer3DModel's, `pose_patch_embedding.weight`,
    `motion_encoder.res_blocks.0.conv2.act_fn.bias`, `motion_encoder.motion_synthesis_weight`,
    `face_encoder.conv1_local.weight`, `face_adapter.0.to_q.weight`, ... diffusers:
    `WanAnimateTransformer3DModel(hidden_states, timestep, encoder_hidden_states,
    encoder_hidden_states_image, pose_hidden_states, face_pixel_values).sample`.
    """

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_ANIMATE_DEFAULTS, **config}
        ins, latent = cfg["in_channels"], cfg["latent_channels"]
        if ins is None and latent is None:
            raise ValueError("a Wan Animate config sets in_channels or latent_channels")
        latent = (ins - 4) // 2 if latent is None else latent
        ins = 2 * latent + 4 if ins is None else ins
        if ins != 2 * latent + 4:
            raise ValueError(f"Wan Animate's in_channels ({ins}) must be 2 * latent_channels "
                             f"+ 4 ({2 * latent + 4}); fix the transformer's config")
        every, layers = int(cfg["inject_face_latents_blocks"]), cfg.get("num_layers", 40)
        if every < 1 or layers % every:
            raise ValueError(f"inject_face_latents_blocks ({every}) must divide num_layers "
                             f"({layers}); fix the transformer's config")
        cfg.update(in_channels=ins, latent_channels=latent,
                   out_channels=cfg["out_channels"] or latent)
        super().__init__(cfg, dtype=dtype, device=device)
        place: Place = {"dtype": dtype, "device": device}
        dim = self.config["num_attention_heads"] * self.config["attention_head_dim"]
        self.pose_patch_embedding = PatchEmbedding(latent, dim, self.patch, place)
        # the encoders run in float32 whatever the dtype (~40M weights of the 14B's; diffusers
        # keeps their QR and norms in float32): float16 ones moved the face tokens 0.5 %
        # and the tiny test's flow 3 times float16's error elsewhere
        wide: Place = {"dtype": np.float32, "device": device}
        self.motion_encoder = WanAnimateMotionEncoder(self.config, wide)
        self.face_encoder = WanAnimateFaceEncoder(self.config, dim, wide)
        self.face_adapter = nn.ModuleList([
            WanAnimateFaceBlockCrossAttention(dim, self.config["num_attention_heads"],
                                              self.config["eps"], place)
            for _ in range(self.config["num_layers"] // every)])

    def encode_face(self, face_pixel_values: Tensor, batch_size: int | None = None) -> Tensor:
        """Face pixels (B, 3, T, size, size) in -1..1 -> the face tokens (B, T' + 1, heads +
        1, dim) the face blocks read (T' = T halved twice, rounding up; a zero frame first,
        the reference's), in the model's dtype; the same for every step (a pipeline computes
        it once per video).
        `batch_size`: crops through the motion encoder at a time (config's
        motion_encoder_batch_size by default; diffusers' motion_encode_batch_size)."""
        size = self.motion_encoder.size
        if face_pixel_values.ndim != 5 or face_pixel_values.shape[1] != 3 or tuple(
                face_pixel_values.shape[3:]) != (size, size):
            raise ValueError(f"face pixels must be (batch, 3, frames, {size}, {size}), got "
                             f"shape {tuple(face_pixel_values.shape)}; crop the faces to "
                             f"{size} x {size}")
        batch, channels, frames, height, width = face_pixel_values.shape
        crops = permute(cast(face_pixel_values, np.float32), (0, 2, 1, 3, 4)).reshape(
            batch * frames, channels, height, width)
        step = max(1, int(batch_size or self.config["motion_encoder_batch_size"]))
        directions = self.motion_encoder.directions()
        vectors = [self.motion_encoder(take_slice(crops, i, min(i + step, len(crops))),
                                       directions) for i in range(0, len(crops), step)]
        motion = (vectors[0] if len(vectors) == 1 else concatenate(vectors, axis=0))
        tokens = self.face_encoder(motion.reshape(batch, frames, -1))
        tokens = cast(tokens, self.dtype)
        first = zeros((batch, 1, *tokens.shape[2:]), tokens.dtype, device=tokens.device)
        return concatenate([first, tokens], axis=1)

    def encode_pose(self, pose_hidden_states: Tensor) -> Tensor:
        """Pose latents (B, latent_channels, F - 1, H, W) -> their embedded patches (B, L',
        dim), added to the video's patches after its first latent frame."""
        channels = self.config["latent_channels"]
        if pose_hidden_states.ndim != 5 or pose_hidden_states.shape[1] != channels:
            raise ValueError(f"pose latents must be (batch, {channels}, frames - 1, height, "
                             f"width), got shape {tuple(pose_hidden_states.shape)}")
        patches, _ = wan_patches(cast(pose_hidden_states, self.dtype), self.patch)
        return self.pose_patch_embedding(patches)

    def forward(self, hidden_states: Tensor, timestep: Any, encoder_hidden_states: Tensor, *,
                pose_hidden_states: Tensor | None = None,
                face_pixel_values: Tensor | None = None, face_context: Tensor | None = None,
                motion_encode_batch_size: int | None = None, **options: Any) -> Tensor:
        """WanTransformer3DModel.forward's inputs (its `options`: context, the CLIP image
        states or image_context, cache) and Animate's: `pose_hidden_states` (B or 1,
        latent_channels, F - 1, H, W), and `face_pixel_values` (B or 1, 3, T, size, size;
        T = 4 (F - 2) + 1, e.g. 77 for 21 latent frames) or `face_context` =
        `encode_face(...)` given instead."""
        batch, _, frames, height, width = hidden_states.shape
        if pose_hidden_states is None:
            raise ValueError("Wan Animate reads the pose video's latents: give "
                             "pose_hidden_states")
        if (pose_hidden_states.shape[2] + 1 != frames
                or tuple(pose_hidden_states.shape[3:]) != (height, width)):
            raise ValueError(f"pose latents of {tuple(pose_hidden_states.shape)} for a latent "
                             f"video of {tuple(hidden_states.shape)}: give them one frame "
                             "fewer (no reference frame) and the video's height and width")
        if face_context is None:
            if face_pixel_values is None:
                raise ValueError("Wan Animate reads the face video: give face_pixel_values "
                                 "or face_context")
            face_context = self.encode_face(face_pixel_values, motion_encode_batch_size)
        face = _batched(face_context, batch, "face video")
        pose = _batched(self.encode_pose(pose_hidden_states), batch, "pose latents")
        tokens = frames * height * width // math.prod(self.patch)
        if tokens % face.shape[1]:
            raise ValueError(f"the face video gives {face.shape[1]} face frames, which do not "
                             f"divide the latent video's {tokens} patches; give 4 * (latent "
                             "frames - 2) + 1 face frames (77 for 21 latent frames)")
        return super().forward(hidden_states, timestep, encoder_hidden_states,
                               control=self._faces(face), patch_add=pose, **options)

    def _faces(self, face: Tensor) -> Callable[[WanStream], Callable[[int, Tensor], Tensor]]:
        """The face blocks as a control branch: after block i (i a multiple of
        inject_face_latents_blocks), face_adapter[i // that] of the stream added to it."""
        every = self.config["inject_face_latents_blocks"]
        adapters = list(self.face_adapter)

        def branch(_stream: WanStream) -> Callable[[int, Tensor], Tensor]:
            def after(index: int, x: Tensor) -> Tensor:
                return x if index % every else x + adapters[index // every](x, face)

            return after

        return branch

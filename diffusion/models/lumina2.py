"""The Lumina Image 2.0 transformer (diffusers' Lumina2Transformer2DModel names: Next-DiT, as
in Lumina-Image-2.0 and its fine-tunes such as Neta Lumina): a single-stream DiT over caption
tokens (Gemma 2's hidden states) and image patches. The caption passes `context_refiner`
blocks (unmodulated, its padding masked) and the patches `noise_refiner` blocks on their own;
then each picture's caption and patches, caption first, run together through `layers`; 3-axis
rotary positions (the caption along the first axis from 0, each patch at (caption length, row,
column)); a tanh-gated adaLN from the timestep alone. Z-Image (models.z_image) is its
descendant: the same block under other names, without Lumina's grouped-query attention.

A batch runs as one, as diffusers runs it: captions of different lengths padded and their
padding dropped from the keys (a mask per picture), the joint sequences padded to the longest
one likewise; each picture's rotary positions are its own (tables of B * L rows).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, concatenate, nn, permute, take_slice, zeros

from .dit_layers import TimestepEmbedding
from .layers import Place
from .lumina2_blocks import Lumina2TransformerBlock
from .transformer_ops import RMSNorm, cast, kept, rms_norm, rope_tables
from .z_image import patchify
from .z_image_blocks import scaled

__all__ = ["Lumina2Transformer2DModel"]

_DEFAULTS: dict[str, Any] = {
    "sample_size": 128, "patch_size": 2, "in_channels": 16, "out_channels": None,
    "hidden_size": 2304, "num_layers": 26, "num_refiner_layers": 2, "num_attention_heads": 24,
    "num_kv_heads": 8, "multiple_of": 256, "ffn_dim_multiplier": None, "norm_eps": 1e-5,
    "scaling_factor": 1.0, "axes_dim_rope": (32, 32, 32), "axes_lens": (300, 512, 512),
    "cap_feat_dim": 1024,
}
_THETA = 10000.0  # diffusers' Lumina2RotaryPosEmbed has no config field for it
# rotary tables and key masks kept (forget_kept drops them): three tables and two masks a call
# (caption, image, joint), for a prompt's and a negative prompt's calls
_KEPT = 10


class Lumina2NormOut(nn.Module):
    """LayerNorm (no affine, eps 1e-6) scaled by 1 + linear_1(silu(temb)), then linear_2 to
    patches. diffusers: `LuminaLayerNormContinuous(elementwise_affine=False, out_dim=...)`."""

    def __init__(self, dim: int, out: int, place: Place) -> None:
        self.linear_1 = nn.Linear(min(dim, 1024), dim, **place)
        self.linear_2 = nn.Linear(dim, out, **place)

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        scale = self.linear_1(nn.silu(temb))
        normed = nn.layer_norm(x, None, None, eps=1e-6)
        return self.linear_2(scaled(normed, scale.reshape(scale.shape[0], 1, -1)))


class Lumina2Transformer2DModel(nn.Module):
    """Latents (B, C, H, W), timesteps and the captions' states with their mask -> the model
    output (B, C, H, W) (diffusers' sign: Lumina2Pipeline steps with its negation).

    Config: `transformer/config.json` of a Lumina 2 folder (diffusers' fields). Parameter
    names are diffusers' (`x_embedder.weight`, `time_caption_embed.timestep_embedder.linear_1
    .weight`, `time_caption_embed.caption_embedder.0.weight`, `layers.0.attn.to_q.weight`,
    `layers.0.norm1.linear.weight`, `context_refiner.0.norm1.weight`, `norm_out.linear_2
    .weight`, ...). diffusers: `Lumina2Transformer2DModel(hidden_states, timestep,
    encoder_hidden_states, encoder_attention_mask).sample`.
    """

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        dim, heads, kv_heads = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_kv_heads"]
        if dim % heads or sum(cfg["axes_dim_rope"]) != dim // heads:
            raise ValueError(f"axes_dim_rope {tuple(cfg['axes_dim_rope'])} must add up to the "
                             f"head dim {dim} / {heads}")
        if heads % kv_heads:
            raise ValueError(f"num_attention_heads {heads} is not a multiple of num_kv_heads "
                             f"{kv_heads}")
        self.config = cfg
        place: Place = {"dtype": dtype, "device": device}
        patch, channels = cfg["patch_size"], cfg["in_channels"]
        self.out_channels = cfg["out_channels"] or channels
        self.x_embedder = nn.Linear(patch * patch * channels, dim, **place)
        self.time_caption_embed = nn.Namespace()
        self.time_caption_embed.timestep_embedder = TimestepEmbedding(256, min(dim, 1024), place)
        self.time_caption_embed.caption_embedder = nn.ModuleList([
            RMSNorm(cfg["cap_feat_dim"], cfg["norm_eps"], place=place),
            nn.Linear(cfg["cap_feat_dim"], dim, **place)])
        refiners = range(cfg["num_refiner_layers"])
        self.noise_refiner = nn.ModuleList(
            [Lumina2TransformerBlock(cfg, place, modulation=True) for _ in refiners])
        self.context_refiner = nn.ModuleList(
            [Lumina2TransformerBlock(cfg, place, modulation=False) for _ in refiners])
        self.layers = nn.ModuleList([Lumina2TransformerBlock(cfg, place, modulation=True)
                                     for _ in range(cfg["num_layers"])])
        self.norm_out = Lumina2NormOut(dim, patch * patch * self.out_channels, place)
        self._tables: dict[tuple[Any, ...], Any] = {}

    @property
    def device(self) -> Device:
        return self.x_embedder.weight.device

    @property
    def dtype(self) -> np.dtype:
        return self.x_embedder.weight.dtype

    def rotary(self, ids: np.ndarray) -> tuple[Tensor, Tensor]:
        """cos/sin (L, 1, head_dim) of integer positions ids (L, 3), each axis's angles
        computed in float64 (theta 10000) and repeated over its pairs. diffusers:
        `Lumina2RotaryPosEmbed` (complex128 tables). Kept on the device for the next steps."""
        ids = np.asarray(ids, np.int64)
        for axis, limit in enumerate(self.config["axes_lens"]):
            if ids[:, axis].max(initial=0) >= limit:
                raise ValueError(f"position {int(ids[:, axis].max())} on rotary axis {axis} is "
                                 f"past this model's {limit}; use a shorter prompt or a smaller "
                                 "picture")
        return kept(self._tables, (ids.shape, ids.tobytes(), self.device),
                    lambda: rope_tables(ids, tuple(self.config["axes_dim_rope"]), _THETA,
                                        device=self.device), _KEPT)

    def _keep(self, lengths: list[int], total: int) -> Tensor | None:
        """The keys' additive mask (B, 1, 1, total): 0 on each picture's first lengths[i]
        tokens, -inf past them; None where every key is kept (diffusers: no mask then)."""
        if all(n == total for n in lengths):
            return None

        def make() -> Tensor:
            keep = np.where(np.arange(total)[None, :] < np.asarray(lengths)[:, None],
                            np.float32(0), np.float32(-np.inf)).astype(np.float32)
            return asarray(keep.reshape(len(lengths), 1, 1, total), device=self.device)

        # kept as the rotary tables are: the same every step, and each upload a submit
        return kept(self._tables, ("mask", tuple(lengths), total, self.device), make, _KEPT)

    def _caption(self, states: Tensor) -> Tensor:
        """caption_embedder over (B, L, cap_feat_dim) states (any float dtype; the RMS norm
        reads them as they are, an LLM's float32 states included) -> (B, L, dim)."""
        norm, linear = self.time_caption_embed.caption_embedder
        return linear(cast(rms_norm(states, norm.weight, norm.eps), self.dtype))

    @staticmethod
    def _lengths(mask: Any, batch: int, length: int) -> list[int]:
        """Each caption's token count from encoder_attention_mask (B, L), which must keep a
        prefix of each row (the tokenizer's right padding, as diffusers assumes)."""
        if mask is None:
            return [length] * batch
        keep = np.asarray(mask.numpy() if isinstance(mask, Tensor) else mask).astype(bool)
        if keep.shape != (batch, length):
            raise ValueError(f"encoder_attention_mask {keep.shape} must be (batch, tokens) = "
                             f"{(batch, length)}, as encoder_hidden_states")
        lengths = keep.sum(axis=1)
        if (keep != (np.arange(length)[None, :] < lengths[:, None])).any() or not lengths.all():
            raise ValueError("encoder_attention_mask must keep a non-empty prefix of each "
                             "caption (pad the prompts on the right)")
        return [int(n) for n in lengths]

    def forward(self, hidden_states: Tensor, timestep: Any, encoder_hidden_states: Tensor,
                encoder_attention_mask: Any = None) -> Tensor:
        """hidden_states (B, C, H, W) latents, H and W multiples of patch_size; timestep (B,)
        host numbers or a float32 Tensor (a replayed step's) in [0, 1] (1 the clean end:
        Lumina2Pipeline passes 1 - t / 1000);
        encoder_hidden_states (B, L, cap_feat_dim), the captions padded on the right;
        encoder_attention_mask (B, L) host 1/0 (None: no padding)."""
        batch, channels, height, width = hidden_states.shape
        p, dim = self.config["patch_size"], self.config["hidden_size"]
        if encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[0] != batch:
            raise ValueError(f"encoder_hidden_states {encoder_hidden_states.shape} must be "
                             f"(batch, tokens, {self.config['cap_feat_dim']}) for {batch} "
                             "latents")
        if channels != self.config["in_channels"]:
            raise ValueError(f"latents of {channels} channels for a transformer of "
                             f"{self.config['in_channels']}; use this model's VAE")
        if height % p or width % p:
            raise ValueError(f"latents of {height} x {width} are not multiples of the patch "
                             f"size {p}; use a picture size divisible by {8 * p}")
        lengths = self._lengths(encoder_attention_mask, batch, encoder_hidden_states.shape[1])
        # padding past the longest caption is masked everywhere: dropped, the same outputs
        # (Lumina2Pipeline pads every prompt to max_sequence_length)
        cap_len = max(lengths)
        if cap_len < encoder_hidden_states.shape[1]:
            encoder_hidden_states = take_slice(encoder_hidden_states, 0, cap_len, axis=1)
        rows, columns = height // p, width // p
        image_len = rows * columns
        # 1. the timestep embedding (diffusers: time_proj in the latents' dtype), caption, patches
        t = timestep.reshape(-1) if isinstance(timestep, Tensor) else np.asarray(
            timestep, np.float32).reshape(-1)
        features = nn.timestep_embedding(t, 256, flip_sin_to_cos=True, downscale_freq_shift=0,
                                         dtype=self.dtype, device=self.device)
        temb = self.time_caption_embed.timestep_embedder(features)
        cap = self._caption(encoder_hidden_states)
        x = self.x_embedder(patchify(cast(hidden_states, self.dtype), p))
        # 2. the refiners: the caption at positions 0.. (its padding masked), each picture's
        # patches at (its caption's length, row, column)
        cap_ids = np.zeros((cap_len, 3), np.int64)
        cap_ids[:, 0] = np.arange(cap_len)
        cap_rotary = self.rotary(np.tile(cap_ids, (batch, 1)))
        keep = self._keep(lengths, cap_len)
        for block in self.context_refiner:
            cap = block(cap, cap_rotary, keep)
        grid = np.stack(np.meshgrid(np.arange(rows), np.arange(columns), indexing="ij"),
                        axis=-1).reshape(-1, 2)
        image_ids = [np.concatenate([np.full((image_len, 1), n), grid], axis=1)
                     for n in lengths]
        image_rotary = self.rotary(np.concatenate(image_ids))
        for block in self.noise_refiner:
            x = block(x, image_rotary, None, temb)
        # 3. each picture's caption then patches, padded to the longest (positions 0, masked)
        total = max(lengths) + image_len
        parts, ids = [], []
        for i, n in enumerate(lengths):
            joint = [take_slice(take_slice(cap, i, i + 1, axis=0), 0, n, axis=1),
                     take_slice(x, i, i + 1, axis=0)]
            if total > n + image_len:
                joint.append(zeros((1, total - n - image_len, dim), self.dtype,
                                   device=self.device))
            parts.append(concatenate(joint, axis=1))
            ids.append(np.concatenate([cap_ids[:n], image_ids[i],
                                       np.zeros((total - n - image_len, 3), np.int64)]))
        joint_x = parts[0] if batch == 1 else concatenate(parts, axis=0)
        joint_rotary = self.rotary(np.concatenate(ids))
        keep = self._keep([n + image_len for n in lengths], total)
        for block in self.layers:
            joint_x = block(joint_x, joint_rotary, keep, temb)
        # 4. the output norm and projection over each picture's patches; back to latents
        outs = [take_slice(take_slice(joint_x, i, i + 1, axis=0), n, n + image_len, axis=1)
                for i, n in enumerate(lengths)]
        out = self.norm_out(outs[0] if batch == 1 else concatenate(outs, axis=0), temb)
        out = out.reshape(batch, rows, columns, p, p, self.out_channels)
        return permute(out, (0, 5, 1, 3, 2, 4)).reshape(batch, self.out_channels, height, width)

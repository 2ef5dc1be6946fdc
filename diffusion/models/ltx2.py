"""The LTX-2 audio-video transformer (diffusers' LTX2VideoTransformer3DModel names): patchified
video latents and audio latents, each with its own text states, denoised together. Each
stream is projected to its width, conditioned on its timestep (models.ltx2_time), runs the
blocks (models.ltx2_blocks: self-attention, text cross-attention, the two streams attending to
each other, feed-forward) with rotary positions in seconds and pixels (models.ltx2_rope), and
ends in a modulated norm and a projection back to latent channels: the velocity of each.

What is left out, each refused in one line: per-batch-element STG masks that perturb some
elements and not others (run those elements as their own call) and positions (video_coords,
audio_coords) that differ between batch elements.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, concatenate, nn

from .layers import Place, ProjOutPlace
from .ltx2_blocks import LTX2VideoTransformerBlock, Stream
from .ltx2_rope import Rotary, audio_coords, rope_tables, video_coords
from .ltx2_time import AdaLayerNormSingle, timestep_runs
from .step_cache import BranchCache, run_blocks
from .transformer_ops import Modulation, cast, kept
from .wan_blocks import by_segment, joined
from .wan_embeddings import TextProjection

__all__ = ["LTX2VideoTransformer3DModel"]

_DEFAULTS: dict[str, Any] = {
    "in_channels": 128, "out_channels": 128, "patch_size": 1, "patch_size_t": 1,
    "num_attention_heads": 32, "attention_head_dim": 128, "cross_attention_dim": 4096,
    "vae_scale_factors": (8, 32, 32), "pos_embed_max_pos": 20, "base_height": 2048,
    "base_width": 2048, "gated_attn": False, "cross_attn_mod": False,
    "audio_in_channels": 128, "audio_out_channels": 128, "audio_patch_size": 1,
    "audio_patch_size_t": 1, "audio_num_attention_heads": 32, "audio_attention_head_dim": 64,
    "audio_cross_attention_dim": 2048, "audio_scale_factor": 4, "audio_pos_embed_max_pos": 20,
    "audio_sampling_rate": 16000, "audio_hop_length": 160, "audio_gated_attn": False,
    "audio_cross_attn_mod": False, "num_layers": 48, "activation_fn": "gelu-approximate",
    "qk_norm": "rms_norm_across_heads", "norm_elementwise_affine": False, "norm_eps": 1e-6,
    "caption_channels": 3840, "attention_bias": True, "attention_out_bias": True,
    "rope_theta": 10000.0, "rope_double_precision": True, "causal_offset": 1,
    "timestep_scale_multiplier": 1000, "cross_attn_timestep_scale_multiplier": 1000,
    "rope_type": "interleaved", "use_prompt_embeddings": True, "perturbed_attn": False,
    "ff_bias": True, "audio_ff_bias": True, "use_prompt_adaln_single": True,
    "use_keyframes_abs_pos_embedding": False,
}


def _check_config(cfg: dict[str, Any]) -> None:
    """One-line errors for the settings this model does not implement."""
    if cfg["rope_type"] not in ("interleaved", "split"):
        raise ValueError(f"LTX-2 rope_type {cfg['rope_type']!r} is not one of 'interleaved', "
                         "'split'")
    if cfg["qk_norm"] != "rms_norm_across_heads" or cfg["activation_fn"] != "gelu-approximate":
        raise ValueError(f"LTX-2 qk_norm {cfg['qk_norm']!r} / activation_fn "
                         f"{cfg['activation_fn']!r} are not supported; this model implements "
                         "'rms_norm_across_heads' and 'gelu-approximate'")
    audio = cfg["audio_num_attention_heads"] * cfg["audio_attention_head_dim"]
    if cfg["audio_cross_attention_dim"] != audio:
        raise ValueError(f"LTX-2 audio_cross_attention_dim {cfg['audio_cross_attention_dim']} "
                         f"must equal the audio width {audio} (the audio-video attention's "
                         "rotations cover it)")


def _key_mask(mask: Any, batch: int, dtype: Any, device: Device, name: str) -> Tensor | None:
    """diffusers' additive form (1 - mask) * -10000 (B, 1, 1, L) of a (B, L) 0/1 mask; None
    where it keeps every token (LTX2Pipeline's connectors' mask always does): adding zeros
    changes no score, and the call skips the mask's loads (a key mask costs ~4% on the matrix
    units; before gpustd.nn.attention took key masks there, it cost this 7x on an H200)."""
    if mask is None:
        return None
    values = np.asarray(mask.numpy() if isinstance(mask, Tensor) else mask)
    if values.ndim != 2 or values.shape[0] != batch:
        raise ValueError(f"{name} must be (batch, tokens) with 1 for kept tokens, got shape "
                         f"{values.shape}")
    if (values == 1).all():
        return None
    bias = (1 - values.astype(dtype)) * np.asarray(-10000.0, dtype)
    return asarray(bias.astype(np.float32)[:, None, None, :], device=device)


def _same_over_batch(coords: Any, axes: int, name: str) -> np.ndarray:
    """coords (B, axes, L, 2) -> (axes, L, 2) float32, refused where batch elements differ."""
    values = np.asarray(coords.numpy() if isinstance(coords, Tensor) else coords, np.float32)
    if values.ndim != 4 or values.shape[1] != axes or values.shape[3] != 2:
        raise ValueError(f"{name} must be (batch, {axes}, tokens, 2), got shape {values.shape}")
    if not (values == values[:1]).all():
        raise ValueError(f"{name} differ between batch elements; run them as separate calls")
    return values[0]


class LTX2VideoTransformer3DModel(ProjOutPlace, nn.Module):
    """Video tokens (B, Lv, in_channels), audio tokens (B, La, audio_in_channels) and their
    text states -> (video velocity (B, Lv, out_channels), audio velocity (B, La,
    audio_out_channels)).

    Config: `transformer/config.json` of an LTX-2 diffusers folder (diffusers' fields and
    defaults: LTX-2.0, and LTX-2.3's gated attention, prompt modulation, no caption
    projection and STG-able self-attention). Parameter names are diffusers' (`proj_in.weight`,
    `time_embed.emb.timestep_embedder.linear_1.weight`, `transformer_blocks.0.attn1.norm_q.
    weight`, `transformer_blocks.0.audio_to_video_attn.to_q.weight`, `scale_shift_table`,
    ...). diffusers: `LTX2VideoTransformer3DModel(...)` with `return_dict=False`.
    """

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        cfg["out_channels"] = cfg["out_channels"] or cfg["in_channels"]
        cfg["audio_out_channels"] = cfg["audio_out_channels"] or cfg["audio_in_channels"]
        _check_config(cfg)
        self.config = cfg
        place: Place = {"dtype": dtype, "device": device}
        dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
        audio = cfg["audio_num_attention_heads"] * cfg["audio_attention_head_dim"]
        self.proj_in = nn.Linear(cfg["in_channels"], dim, **place)
        self.audio_proj_in = nn.Linear(cfg["audio_in_channels"], audio, **place)
        if cfg["use_keyframes_abs_pos_embedding"]:
            self.keyframes_abs_pos_embedding = nn.parameter((1, dim), **place)
        if cfg["use_prompt_embeddings"]:
            self.caption_projection = TextProjection(cfg["caption_channels"], dim, place)
            self.audio_caption_projection = TextProjection(cfg["caption_channels"], audio, place)
        self.prompt_modulation = cfg["cross_attn_mod"] or cfg["audio_cross_attn_mod"]
        self.time_embed = AdaLayerNormSingle(dim, 9 if cfg["cross_attn_mod"] else 6, place)
        self.audio_time_embed = AdaLayerNormSingle(
            audio, 9 if cfg["audio_cross_attn_mod"] else 6, place)
        self.av_cross_attn_video_scale_shift = AdaLayerNormSingle(dim, 4, place)
        self.av_cross_attn_audio_scale_shift = AdaLayerNormSingle(audio, 4, place)
        self.av_cross_attn_video_a2v_gate = AdaLayerNormSingle(dim, 1, place)
        self.av_cross_attn_audio_v2a_gate = AdaLayerNormSingle(audio, 1, place)
        self.scale_shift_table = nn.parameter((2, dim), **place)
        self.audio_scale_shift_table = nn.parameter((2, audio), **place)
        if self.prompt_modulation and cfg["use_prompt_adaln_single"]:
            self.prompt_adaln = AdaLayerNormSingle(dim, 2, place)
            self.audio_prompt_adaln = AdaLayerNormSingle(audio, 2, place)
        self.transformer_blocks = nn.ModuleList([LTX2VideoTransformerBlock(cfg, place)
                                                 for _ in range(cfg["num_layers"])])
        self.proj_out = nn.Linear(dim, cfg["out_channels"], **place)
        self.audio_proj_out = nn.Linear(audio, cfg["audio_out_channels"], **place)
        self._tables: dict[Any, Any] = {}

    def encode_text(self, states: Tensor, audio_states: Tensor) -> tuple[Tensor, Tensor]:
        """Each stream's text context from its states (B, Lt, caption_channels): the caption
        projections (LTX-2.0), or the states as they are (LTX-2.3, whose text connectors
        project them); the same for every step (a pipeline computes it once)."""
        states, audio_states = cast(states, self.dtype), cast(audio_states, self.dtype)
        if not self.config["use_prompt_embeddings"]:
            return states, audio_states
        return self.caption_projection(states), self.audio_caption_projection(audio_states)

    def _rotaries(self, video: np.ndarray, audio: np.ndarray) -> tuple[Rotary, ...]:
        """(video, audio, video cross, audio cross) tables of the coords (3, Lv, 2) and
        (1, La, 2)."""
        cfg = self.config
        split = cfg["rope_type"] == "split"
        cross_max = max(cfg["pos_embed_max_pos"], cfg["audio_pos_embed_max_pos"])
        heads, audio_heads = cfg["num_attention_heads"], cfg["audio_num_attention_heads"]
        dim = heads * cfg["attention_head_dim"]
        common = {"theta": cfg["rope_theta"], "device": self.device,
                  "double_precision": cfg["rope_double_precision"]}
        cross_dim = cfg["audio_cross_attention_dim"]
        return (rope_tables(video, (cfg["pos_embed_max_pos"], cfg["base_height"],
                                    cfg["base_width"]), dim,
                            split_heads=heads if split else None, **common),
                rope_tables(audio, (cfg["audio_pos_embed_max_pos"],),
                            audio_heads * cfg["audio_attention_head_dim"],
                            split_heads=audio_heads if split else None, **common),
                rope_tables(video[:1], (cross_max,), cross_dim,
                            split_heads=heads if split else None, **common),
                rope_tables(audio, (cross_max,), cross_dim,
                            split_heads=audio_heads if split else None, **common))

    def rotaries(self, grid: tuple[int, int, int], fps: float, audio_frames: int
                 ) -> tuple[Rotary, ...]:
        """_rotaries of the positions diffusers makes for a latent video grid (frames,
        height, width) at `fps` and `audio_frames` audio latents, kept between calls."""
        cfg = self.config

        def make() -> tuple[Rotary, ...]:
            video = video_coords(*grid, patch=cfg["patch_size"], patch_t=cfg["patch_size_t"],
                                 scale_factors=tuple(cfg["vae_scale_factors"]),
                                 causal_offset=cfg["causal_offset"], fps=fps)
            audio = audio_coords(audio_frames, patch_t=cfg["audio_patch_size_t"],
                                 scale_factor=cfg["audio_scale_factor"],
                                 causal_offset=cfg["causal_offset"],
                                 hop_length=cfg["audio_hop_length"],
                                 sampling_rate=cfg["audio_sampling_rate"])
            return self._rotaries(video, audio)

        return kept(self._tables, (grid, float(fps), audio_frames), make)

    def _times(self, audio: bool, runs: list[tuple[int, int, np.ndarray]],
               cross_runs: list[tuple[int, int, np.ndarray]]) -> tuple[list[Any], ...]:
        """A stream's (times, cross, embedded timesteps) over its runs of tokens."""
        embed = self.audio_time_embed if audio else self.time_embed
        shift_scale = (self.av_cross_attn_audio_scale_shift if audio
                       else self.av_cross_attn_video_scale_shift)
        gate = self.av_cross_attn_audio_v2a_gate if audio else self.av_cross_attn_video_a2v_gate
        cfg, device = self.config, self.device
        factor = cfg["cross_attn_timestep_scale_multiplier"] / cfg["timestep_scale_multiplier"]
        times, embedded, cross = [], [], []
        for start, stop, values in runs:
            projection, emb = embed(values, device)
            times.append((start, stop, projection))
            embedded.append(emb)
        for start, stop, values in cross_runs:
            both = [shift_scale(values, device)[0], gate(values * np.float32(factor), device)[0]]
            cross.append((start, stop, concatenate(both, axis=1)))
        return times, cross, embedded

    def forward(self, hidden_states: Tensor, audio_hidden_states: Tensor,
                encoder_hidden_states: Tensor | None, audio_encoder_hidden_states: Tensor | None,
                timestep: Any, audio_timestep: Any = None, sigma: Any = None,
                audio_sigma: Any = None, encoder_attention_mask: Any = None,
                audio_encoder_attention_mask: Any = None, num_frames: int | None = None,
                height: int | None = None, width: int | None = None, fps: float = 24.0,
                audio_num_frames: int | None = None, video_coords: Any = None,
                audio_coords: Any = None, isolate_modalities: bool = False,
                spatio_temporal_guidance_blocks: list[int] | None = None,
                perturbation_mask: Any = None, use_cross_timestep: bool = False,
                video_self_attention_mask: Any = None, video_keyframes_mask: Any = None, *,
                context: tuple[Tensor, Tensor] | None = None,
                cache: BranchCache | None = None) -> tuple[Tensor, Tensor]:
        """diffusers' forward (its names and meanings; host arrays for the timesteps, sigmas,
        masks and coords): hidden_states (B, Lv, in_channels) with Lv = num_frames * height *
        width latent patches (or video_coords (B, 3, Lv, 2) given), audio_hidden_states
        (B, La, audio_in_channels) with La = audio_num_frames (or audio_coords (B, 1, La, 2));
        timestep (B,) or (B, Lv) per token, audio_timestep (B,) or (B, La) (default:
        timestep); sigma / audio_sigma (B,) for LTX-2.3's prompt modulation and
        use_cross_timestep; the text masks (B, Lt) 1 = kept. `context`: encode_text's pair,
        given in place of the two text states; `cache`: a step cache branch the blocks run
        through (the video stream's residual decides, both streams cached). Returns (video,
        audio) velocities."""
        batch, length, _ = hidden_states.shape
        audio_length = audio_hidden_states.shape[1]
        device, dtype = self.device, self.dtype
        cfg = self.config
        # 1. rotary tables of the positions
        if video_coords is None and audio_coords is None:
            if num_frames is None or height is None or width is None \
                    or audio_num_frames is None:
                raise ValueError("give num_frames, height, width and audio_num_frames (or "
                                 "video_coords and audio_coords) for the rotary positions")
            grid = (int(num_frames), int(height), int(width))
            patches = (-(-grid[0] // cfg["patch_size_t"]) * -(-grid[1] // cfg["patch_size"])
                       * -(-grid[2] // cfg["patch_size"]))
            if patches != length or audio_num_frames != audio_length:
                raise ValueError(f"{grid[0]} x {grid[1]} x {grid[2]} latents make {patches} "
                                 f"video tokens and audio_num_frames {audio_num_frames} audio "
                                 f"tokens; the inputs hold {length} and {audio_length}")
            rotary, audio_rotary, cross_rotary, audio_cross_rotary = self.rotaries(
                grid, fps, audio_length)
        elif video_coords is None or audio_coords is None:
            raise ValueError("give both video_coords and audio_coords, or neither")
        else:
            rotary, audio_rotary, cross_rotary, audio_cross_rotary = self._rotaries(
                _same_over_batch(video_coords, 3, "video_coords"),
                _same_over_batch(audio_coords, 1, "audio_coords"))
        # 2. the time conditioning of each stream, and of their attention to each other
        audio_timestep = timestep if audio_timestep is None else audio_timestep
        audio_sigma = sigma if audio_sigma is None else audio_sigma
        runs = timestep_runs(timestep, batch, length, "timestep")
        audio_runs = timestep_runs(audio_timestep, batch, audio_length, "audio_timestep")
        needs_sigma = use_cross_timestep or (self.prompt_modulation
                                             and cfg["use_prompt_adaln_single"])
        if needs_sigma and sigma is None:
            raise ValueError("this call needs sigma (B,) (use_cross_timestep, or the prompt "
                             "modulation of an LTX-2.3 model)")
        times, cross, embedded = self._times(False, runs, timestep_runs(
            audio_sigma, batch, length, "audio_sigma") if use_cross_timestep else runs)
        audio_times, audio_cross, audio_embedded = self._times(True, audio_runs, timestep_runs(
            sigma, batch, audio_length, "sigma") if use_cross_timestep else audio_runs)
        # 3. the text of each stream, its key masks
        if context is None:
            if encoder_hidden_states is None or audio_encoder_hidden_states is None:
                raise ValueError("give encoder_hidden_states and audio_encoder_hidden_states, "
                                 "or context=encode_text(...)")
            context = self.encode_text(encoder_hidden_states, audio_encoder_hidden_states)
        prompt = audio_prompt = None
        if self.prompt_modulation and cfg["use_prompt_adaln_single"]:
            prompt = self.prompt_adaln(np.asarray(sigma, np.float32), device)[0]
            audio_prompt = self.audio_prompt_adaln(np.asarray(audio_sigma, np.float32),
                                                   device)[0]
        self_mask = None
        if video_self_attention_mask is not None:
            values = np.asarray(video_self_attention_mask, np.float32)
            if values.shape != (batch, length, length):
                raise ValueError(f"video_self_attention_mask must be ({batch}, {length}, "
                                 f"{length}), got shape {values.shape}")
            bias = (1 - values.astype(dtype)) * np.asarray(-10000.0, dtype)
            self_mask = asarray(bias.astype(np.float32)[:, None], device=device)
        video = Stream(times, cross, rotary, cross_rotary, context[0], _key_mask(
            encoder_attention_mask, batch, dtype, device, "encoder_attention_mask"),
            prompt, self_mask)
        audio = Stream(audio_times, audio_cross, audio_rotary, audio_cross_rotary, context[1],
                       _key_mask(audio_encoder_attention_mask, batch, dtype, device,
                                 "audio_encoder_attention_mask"), audio_prompt)
        # 4. the patches into each stream's width; LTX-2.5's keyframe marker
        x = self.proj_in(cast(hidden_states, dtype))
        a = self.audio_proj_in(cast(audio_hidden_states, dtype))
        if cfg["use_keyframes_abs_pos_embedding"] and video_keyframes_mask is not None:
            marker = np.asarray(video_keyframes_mask).reshape(batch, length, 1) > 0
            x = x + asarray(marker.astype(dtype), device=device) * \
                self.keyframes_abs_pos_embedding
        # 5. the blocks, the first apart (a step cache decides after it whether the others
        # run); STG perturbs the self-attention of its blocks (perturbed_attn models)
        perturbed = self._perturbed(spatio_temporal_guidance_blocks, perturbation_mask)
        blocks = list(self.transformer_blocks)

        def through(streams: tuple[Tensor, Tensor], first: int, last: int
                    ) -> tuple[Tensor, Tensor]:
            x, a = streams
            for index in range(first, last):
                x, a = blocks[index](x, a, video, audio, cross_modal=not isolate_modalities,
                                     perturbed=index in perturbed)
            return x, a

        x, a = run_blocks(cache, (x, a), None,
                          lambda streams, _: (through(streams, 0, min(1, len(blocks))), None),
                          lambda streams, _: through(streams, 1, len(blocks)))
        # 6. each stream's modulated norm and projection out
        return (self.proj_out(self._end(x, self.scale_shift_table, times, embedded)),
                self.audio_proj_out(self._end(a, self.audio_scale_shift_table, audio_times,
                                              audio_embedded)))

    def _perturbed(self, blocks: list[int] | None, mask: Any) -> set[int]:
        """The blocks whose self-attention STG replaces by its values: diffusers'
        spatio_temporal_guidance_blocks where the model has perturbed_attn (it ignores them
        otherwise) and the mask perturbs every batch element (None or all 0)."""
        if not blocks or not self.config["perturbed_attn"]:
            return set()
        if mask is not None:
            values = np.asarray(mask)
            if (values == 1).all():
                return set()
            if not (values == 0).all():
                raise ValueError("a perturbation_mask that perturbs some batch elements and "
                                 "not others is not supported; run those elements as a call "
                                 "of their own")
        return set(blocks)

    def _end(self, x: Tensor, table: Tensor, times: list[Any], embedded: list[Tensor]
             ) -> Tensor:
        """norm(x) * (1 + scale) + shift, (shift, scale) = table + each run's embedded
        timestep (B, dim)."""
        dim = table.shape[1]
        ends = [Modulation((table.reshape(1, 2, dim) + emb.reshape(-1, 1, dim)
                            ).reshape(-1, 2 * dim), 2) for emb in embedded]
        return joined([end.norm(part, shift=0, scale=1)
                       for part, end in zip(by_segment(x, times), ends)])

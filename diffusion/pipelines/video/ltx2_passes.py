"""The transformer's passes of an LTX-2 step and their guidance, as diffusers' LTX2Pipeline
loop body runs them (LTX2ImageToVideoPipeline's: the video's timestep per token, 0 on a kept
first frame's): the CFG batch [negatives, prompts] in one call, then STG's (the
self-attention of its blocks perturbed) and modality guidance's (the streams' attention to
each other off) on the prompts alone; ltx2_guidance combines them per stream. A step cache
gives each pass its own branch (diffusers' cache contexts "cond_uncond", "uncond_stg",
"uncond_modality"). And what the memory modes move of an LTX-2 pipeline (`ltx2_layout`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpustd import Tensor, asarray, take_slice

from ...models.ltx2 import LTX2VideoTransformer3DModel
from ...models.step_cache import StepCache
from ..flow.flow_memory import MemoryLayout
from .ltx2_guidance import LTX2Guidance, guided_velocity

__all__ = ["LTX2Passes", "ltx2_layout"]


def ltx2_layout(pipe: Any) -> MemoryLayout:
    """What the memory modes (flow_memory) move of an LTX-2 pipeline: Gemma and the text
    connectors together, the transformer (also brought in by `encode_text`) and its blocks,
    the video VAE. The audio VAE and vocoder (small) come in for their decode alone."""
    transformer = pipe.transformer
    return MemoryLayout(transformer=transformer, blocks=(transformer.transformer_blocks,),
                        text_encoders=(pipe.text_encoder, pipe.connectors),
                        text_calls=((pipe.text_encoder, "hidden_states_of"),
                                    (pipe.connectors, "project"),
                                    (pipe.connectors, "connect")),
                        vae=pipe.vae, transformer_calls=("encode_text",))


class LTX2Passes:
    """One generation's passes (the module docstring); `step` gives a step's guided
    velocities."""

    def __init__(self, model: LTX2VideoTransformer3DModel, guidance: LTX2Guidance,
                 video_text: Tensor, audio_text: Tensor, mask: np.ndarray,
                 grid: tuple[int, int, int], fps: float, audio_frames: int,
                 batch: int, kept: np.ndarray | None = None,
                 cache: StepCache | None = None) -> None:
        self.model, self.guidance, self.batch = model, guidance, batch
        # image to video: 1 on latent frame 0's tokens (ltx2_start.first_frame_mask's row),
        # which the transformer reads at timestep 0
        self.kept = kept
        self.context = (video_text, audio_text)
        self.mask = mask
        cfg = guidance.cfg
        # the second passes read the prompts' half alone
        self.positive = (_rows(video_text, batch, cfg), _rows(audio_text, batch, cfg))
        self.positive_mask = mask[batch:] if cfg else mask
        self.shape = {"num_frames": grid[0], "height": grid[1], "width": grid[2], "fps": fps,
                      "audio_num_frames": audio_frames, "use_cross_timestep": True}
        # diffusers' STG pass on a model without perturbed_attn is its positive pass again
        self.stg = guidance.stg and bool(model.config["perturbed_attn"])
        self.branches = {name: None if cache is None else cache.branch()
                         for name, runs in (("both", True), ("perturbed", self.stg),
                                            ("isolated", guidance.modality)) if runs}

    def _run(self, name: str, video: np.ndarray, audio: np.ndarray, t: float, context: Any,
             mask: Any, **switches: Any) -> tuple[np.ndarray, np.ndarray]:
        model, count = self.model, len(video)
        times = np.full((count,), t, np.float32)
        video_times = times if self.kept is None else np.ascontiguousarray(
            np.broadcast_to(times[:, None] * (1 - self.kept), (count, self.kept.size)))
        v, a = model(asarray(video, dtype=model.dtype, device=model.device),
                     asarray(audio, dtype=model.dtype, device=model.device), None, None,
                     video_times, audio_timestep=times, sigma=times, encoder_attention_mask=mask,
                     audio_encoder_attention_mask=mask, context=context, **self.shape,
                     cache=self.branches[name], **switches)
        return v.numpy().astype(np.float32), a.numpy().astype(np.float32)

    def step(self, latents: np.ndarray, audio: np.ndarray, t: float, sigma: float
             ) -> tuple[np.ndarray, np.ndarray]:
        """The guided (video, audio) velocities at timestep `t` (sigma `sigma`)."""
        g, b = self.guidance, self.batch
        both = (np.concatenate([latents, latents]), np.concatenate([audio, audio])) \
            if g.cfg else (latents, audio)
        video_v, audio_v = self._run("both", *both, t, self.context, self.mask)
        passes: dict[str, Any] = {"positive": (video_v[-b:], audio_v[-b:])}
        if g.cfg:
            passes["negative"] = (video_v[:b], audio_v[:b])
        if self.stg:
            passes["perturbed"] = self._run("perturbed", latents, audio, t, self.positive,
                                            self.positive_mask,
                                            spatio_temporal_guidance_blocks=list(g.stg_blocks))
        if g.modality:
            passes["isolated"] = self._run("isolated", latents, audio, t, self.positive,
                                           self.positive_mask, isolate_modalities=True)
        return (guided_velocity(latents, sigma, scales=g.video(),
                                **{k: v[0] for k, v in passes.items()}),
                guided_velocity(audio, sigma, scales=g.audio(),
                                **{k: v[1] for k, v in passes.items()}))


def _rows(states: Tensor, batch: int, cfg: bool) -> Tensor:
    """The prompts' rows of a [negatives, prompts] batch of states."""
    return take_slice(states, batch, 2 * batch, axis=0) if cfg else states

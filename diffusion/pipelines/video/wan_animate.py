"""Wan 2.2 Animate, as diffusers' WanAnimatePipeline draws it: a character picture moved by a
pose video and a face video ("animate"), or put in place of the person in a background video
where its mask is white ("replace"). The video is made in segments of `segment_frames` frames
(1 + 4k, 77 Wan Animate's), each after the first continuing from the previous one's last
`overlap` (1 or 5) decoded frames; the pose video's length is the video's.

Per segment the transformer reads, besides its noise (one latent frame more than the segment's,
the first standing for the picture): the picture's latents behind an all-ones 4-channel mask,
then the segment's condition latents (animate: zeros; replace: the background) whose first
`overlap` frames are the previous segment's frames, behind a mask that is 1 on those frames
(replace: and where the background's mask is black); the pose frames' latents; the face crops;
the picture's CLIP vision states (as Wan 2.1 I2V); the prompt. With guidance (> 1; Wan Animate
runs without) the negative pass reads the negative prompt and all-black (-1) face crops. The
decode leaves out the picture's latent frame; a later segment leaves out its first `overlap`
frames. With the torch RNG a seed gives diffusers' video (`generator=torch.Generator("cpu")
.manual_seed(seed)`: each segment's noise drawn after the last's).

    pipe = WanAnimatePipeline.from_pretrained("Wan2.2-Animate-14B-Diffusers")
    pixels = animate_pixels(picture, pose, face, height=720, width=1280, face_size=512)
    frames = pipe("a dancer", pixels=pixels, num_inference_steps=20, seed=7)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gpustd import Tensor, asarray

from ...models.step_cache import BranchCache, StepCache
from ...models.wan_animate import WanAnimateTransformer3DModel
from ...noise.rng import make_generator
from ...sampling.scheduler_loop import scheduler_loop
from ..finite import check_decoded, check_latents
from .animate_inputs import AnimatePixels, check_segments, segment_condition, segment_starts
from .wan import StepCallback, WanPipeline
from .wan_cache import wan_branch
from .wan_image import _latents, clip_image_states

__all__ = ["WanAnimatePipeline"]


class WanAnimatePipeline(WanPipeline):
    """A loaded Wan 2.2 Animate diffusers folder (module docstring): WanPipeline's loading,
    memory modes and LoRAs, with its transformer a WanAnimateTransformer3DModel."""

    transformer: WanAnimateTransformer3DModel

    def _encode(self, video: np.ndarray) -> np.ndarray:
        """Normalized latents (posterior means) of each video of `video` (B, 3, T, H, W)."""
        return self._with_vae(lambda vae: np.concatenate(
            [_latents(vae, v[None]) for v in video], axis=0))

    def _pixels(self, latents: np.ndarray) -> np.ndarray:
        """The frames (B, 3, T, H, W) in [-1, 1] the VAE decodes from `latents`."""
        def run(vae: Any) -> np.ndarray:
            z = vae.denormalize(asarray(latents, dtype=vae.post_quant_conv.weight.dtype,
                                        device=vae.device))
            video = vae.decode(z).numpy().astype(np.float32)
            check_decoded(video, vae)
            return video
        return self._with_vae(run)

    def _condition(self, pixels: AnimatePixels, start: int, segment: int, overlap: int,
                   before: np.ndarray | None, batch: int) -> np.ndarray:
        """The segment's condition (B, 4 + C, F', h, w): its mask and latents. diffusers:
        `prepare_prev_segment_cond_latents`."""
        video, mask = segment_condition(pixels, start, segment, overlap, before, batch,
                                        self.vae.spatial_factor)
        return np.concatenate([np.repeat(mask, batch, axis=0), self._encode(video)], axis=1)

    def _place(self, x: np.ndarray) -> Tensor:
        return asarray(x, dtype=self.transformer.dtype, device=self.transformer.device)

    def _contexts(self, positive: np.ndarray, negative: list[np.ndarray],
                  image_states: np.ndarray | None, batch: int, faces: tuple[int, ...]
                  ) -> dict[str, Tensor | None]:
        """The prompts' and the picture's embeddings, and the negative pass's blank face
        tokens (crops of `faces`' shape all -1, the same every segment)."""
        model = self.transformer
        return {"cond": self._context(positive, model),
                "uncond": self._context(negative[0], model) if negative else None,
                "image": None if image_states is None else model.encode_image(
                    self._place(np.repeat(image_states, batch, axis=0))),
                "blank": model.encode_face(self._place(np.full(faces, -1, np.float32)))
                if negative else None}

    def _denoise(self, latents: np.ndarray, condition: np.ndarray, pose: Tensor, face: Tensor,
                 contexts: dict[str, Tensor | None], guidance_scale: float, sampler: str,
                 steps: int, callback: StepCallback | None,
                 branches: dict[str, BranchCache]) -> np.ndarray:
        """One segment's latents sampled by a fresh scheduler (diffusers resets it per
        segment), the flow read with the condition channels, pose and face tokens; each
        pass's blocks through its step cache branch of `branches` ("cond", "uncond") if
        given."""
        model = self.transformer
        scheduler = self.scheduler(sampler)
        scheduler.set_timesteps(steps)

        def predict(x: np.ndarray, t: Any, i: int) -> tuple[np.ndarray, None]:
            sample = self._place(np.concatenate([x, condition], axis=1))
            timestep = np.full(len(x), float(t), np.float32)
            common = {"image_context": contexts["image"], "pose_hidden_states": pose}
            flow = model(sample, timestep, None, context=contexts["cond"], face_context=face,
                         cache=branches.get("cond"), **common).numpy().astype(np.float32)
            if contexts["uncond"] is not None:
                base = model(sample, timestep, None, context=contexts["uncond"],
                             face_context=contexts["blank"], cache=branches.get("uncond"),
                             **common).numpy().astype(np.float32)
                flow = base + np.float32(guidance_scale) * (flow - base)
            return flow, None

        return scheduler_loop(latents, scheduler.timesteps, scheduler, predict,
                              dtype=np.float32, callback=callback)

    def __call__(self, prompt: str | Sequence[str], *,  # type: ignore[override]
                 pixels: AnimatePixels, negative_prompt: str | None = None,
                 segment_frames: int = 77, overlap: int = 1, num_inference_steps: int = 20,
                 guidance_scale: float = 1.0, seed: int = 0, rng: str = "torch",
                 sampler: str = "diffusers", max_sequence_length: int = 512,
                 callback: StepCallback | None = None, cache: StepCache | None = None
                 ) -> np.ndarray:
        """Videos for `prompt` (one or a list): (B, pixels.frames, H, W, 3) float in [0, 1]
        (fewer frames where `callback` stopped a segment by returning False: that segment's
        frames decoded, no later one made).
        `pixels`: animate_inputs.animate_pixels (its background and mask: "replace").
        `cache`: a step cache (First Block Cache, TeaCache: video_cache) whose branches the
        prompt's and the negative prompt's calls run through, as WanPipeline's (the face
        block after the first block is part of that block, as Wan VACE's hint); fresh ones
        each segment, a denoising run of its own. diffusers' FirstBlockCacheConfig hook
        refuses WanAnimateTransformer3DModel (its block class is not registered).
        diffusers: `WanAnimatePipeline(image, pose_video, face_video, background_video,
        mask_video, prompt=, negative_prompt=, height=, width=, segment_frame_length=,
        prev_segment_conditioning_frames=, num_inference_steps=, guidance_scale=,
        mode="replace" if a background else "animate",
        generator=torch.Generator().manual_seed(seed), output_type="np").frames`."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        batch = len(prompts)
        height, width = pixels.reference.shape[1:]
        self.check(height=height, width=width, num_frames=segment_frames,
                   steps=num_inference_steps, rng=rng, sampler=sampler)
        check_segments(segment_frames, overlap)
        if pixels.frames <= overlap:
            raise ValueError(f"the pose video has {pixels.frames} frames; give more than the "
                             f"{overlap} a segment continues from")
        model = self.transformer
        if not isinstance(model, WanAnimateTransformer3DModel):
            raise ValueError("this Wan model is not Wan 2.2 Animate (a diffusers folder whose "
                             "model_index.json names WanAnimatePipeline)")
        if pixels.face.shape[1:3] != (model.motion_encoder.size,) * 2:
            raise ValueError(f"the face crops are {pixels.face.shape[2]}x{pixels.face.shape[1]}"
                             f"; this model reads {model.motion_encoder.size}x"
                             f"{model.motion_encoder.size}: make them with its face_size")
        guided = guidance_scale > 1
        # 1. the prompts' states, the picture's CLIP states and latents (behind ones)
        with self.on_gpu(self.text_encoder):
            negatives = [[negative_prompt or ""] * batch] if guided else []
            positive_states, *negative_states = self.prompt_states_each(
                [prompts, *negatives], max_sequence_length)
        image_states = None
        if model.config["image_dim"] is not None:
            assert self.image_encoder is not None
            with self.on_gpu(self.image_encoder):
                image_states = clip_image_states(self.image_encoder, pixels.picture)
        reference = self._encode(pixels.reference[None, :, None])
        reference = np.concatenate([np.ones((1, 4, *reference.shape[2:]), np.float32),
                                    reference], axis=1)
        generator = make_generator(rng, seed)
        starts = segment_starts(pixels.frames, segment_frames, overlap)
        latent_frames = (segment_frames - 1) // self.temporal_factor + 1
        spatial = self.vae.spatial_factor
        shape = (batch, model.config["latent_channels"], latent_frames + 1, height // spatial,
                 width // spatial)
        contexts: dict[str, Tensor | None] = {}
        videos, before, stopped = [], None, [False]
        for index, start in enumerate(starts):
            # 2. the segment's noise, condition (the reference's frame first) and pose
            latents = generator.standard_normal(shape).astype(np.float32)
            condition = np.concatenate([np.repeat(reference, batch, axis=0), self._condition(
                pixels, start, segment_frames, overlap, before, batch)], axis=2)
            pose = self._encode(pixels.pose_segment(start, segment_frames))
            with self.on_gpu(model):
                if not contexts:  # the text and picture embedded once for all segments
                    contexts.update(self._contexts(positive_states, negative_states,
                                                   image_states, batch,
                                                   (1, 3, segment_frames, *pixels.face.shape[1:3])))
                face = model.encode_face(self._place(pixels.face_segment(start,
                                                                         segment_frames)))

                def step(done: int, total: int, x: np.ndarray, offset: int = index) -> Any:
                    assert callback is not None
                    going = callback(offset * total + done, len(starts) * total, x)
                    stopped.append(going is False)
                    return going

                branches = {} if cache is None else {
                    side: wan_branch(cache, model, height, width)
                    for side in ("cond", "uncond")[:1 + guided]}
                latents = self._denoise(
                    latents, condition, self._place(pose), face, contexts, guidance_scale,
                    sampler, num_inference_steps, None if callback is None else step, branches)
            # 3. the segment's frames, without the picture's latent frame (and, after the
            # first segment, the frames it continued from)
            check_latents(latents, self)
            frames = self._pixels(np.ascontiguousarray(latents[:, :, 1:]))
            before = frames[:, :, -overlap:]
            videos.append(frames if start == 0 else frames[:, :, overlap:])
            if stopped[-1]:  # interrupted: the frames so far, no further segment
                break
        video = np.concatenate(videos, axis=2)[:, :, :pixels.frames]
        return np.clip(video / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 4, 1)

"""NVIDIA's SANA-Video (2B, text or image to video), as diffusers' SanaVideoPipeline (and
SanaImageToVideoPipeline) draws it: Gemma 2's last hidden states of the prompt behind
SANA-Video's complex human instruction (Sana's encoding, diffusion.models.sana_prompt, with the
video wording) condition the Sana Video transformer (linear attention with 3D rotary positions,
models.sana_video) over Wan 2.1 VAE latents (8x smaller, 4x fewer frames, 16 channels normalised
by the VAE's latents_mean / latents_std). The folder's DPM-Solver++ on flow sigmas
(schedulers.dpm_solver_flow) steps the velocity from noise; CFG (`guidance_scale` > 1) as
diffusers', `neg + g (pos - neg)`, the negative prompt without the instruction. As diffusers by
default (`use_resolution_binning`), a 480p model (sample_size 30) or a 720p one (22) draws the
video at its aspect-ratio bin nearest the size asked and resizes it back. Image-to-video (the
same folder): the picture's latent frame is held first, at timestep 0. With the torch RNG a seed
gives diffusers' video (`generator=torch.Generator("cpu").manual_seed(seed)`). The model card
asks for a motion score at the prompt's end (" motion score: 30."), which is left to the prompt.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import asarray

from ...imaging import to_unit_image
from ...loaders.sana.video import load_sana_video_folder
from ...models.llm import LLMTextModel
from ...models.sana_prompt import encode
from ...models.sana_video import SanaVideoTransformer3DModel
from ...models.wan_vae import AutoencoderKLWan
from ...noise.rng import make_generator
from ...sampling.schedulers.dpm_solver_flow import FlowDPMSolverMultistepScheduler
from ...text.llm_tokenizer import LLMTokenizer
from ..finite import check_decoded
from ..flow.flow_memory import load_network
from ..flow.sana_bins import resize_and_crop
from ..observer import StepCallback
from .flow_video import prompt_list

__all__ = ["SANA_VIDEO_INSTRUCTION", "SanaVideoPipeline", "video_bin"]

# SanaVideoPipeline's default `complex_human_instruction`
SANA_VIDEO_INSTRUCTION = (
    "Given a user prompt, generate an 'Enhanced prompt' that provides detailed visual "
    "descriptions suitable for video generation. Evaluate the level of detail in the user "
    "prompt:",
    "- If the prompt is simple, focus on adding specifics about colors, shapes, sizes, "
    "textures, motion, and temporal relationships to create vivid and dynamic scenes.",
    "- If the prompt is already detailed, refine and enhance the existing details slightly "
    "without overcomplicating.",
    "Here are examples of how to transform or refine prompts:",
    "- User Prompt: A cat sleeping -> Enhanced: A small, fluffy white cat slowly settling "
    "into a curled position, peacefully falling asleep on a warm sunny windowsill, with gentle "
    "sunlight filtering through surrounding pots of blooming red flowers.",
    "- User Prompt: A busy city street -> Enhanced: A bustling city street scene at dusk, "
    "featuring glowing street lamps gradually lighting up, a diverse crowd of people in "
    "colorful clothing walking past, and a double-decker bus smoothly passing by towering "
    "glass skyscrapers.",
    "Please generate only the enhanced description for the prompt below and avoid including "
    "any additional commentary or evaluations:",
    "User Prompt: ",
)

# diffusers' ASPECT_RATIO_480_BIN and _720_BIN: height / width to two places -> (height,
# width), by the transformer's sample_size
_BINS = {
    30: {0.5: (448, 896), 0.57: (480, 832), 0.68: (528, 768), 0.78: (560, 720),
         1.0: (624, 624), 1.13: (672, 592), 1.29: (720, 560), 1.46: (768, 528),
         1.67: (816, 496), 1.75: (832, 480), 2.0: (896, 448)},
    22: {0.5: (672, 1344), 0.57: (704, 1280), 0.68: (800, 1152), 0.78: (832, 1088),
         1.0: (960, 960), 1.13: (1024, 896), 1.29: (1088, 832), 1.46: (1152, 800),
         1.67: (1248, 736), 1.75: (1280, 704), 2.0: (1344, 672)},
}


def video_bin(sample_size: int, height: int, width: int) -> tuple[int, int] | None:
    """(height, width) of the bin nearest height / width for a transformer of `sample_size`
    (30: 480p, 22: 720p), None for other sizes (diffusers raises there; here the size asked
    is drawn). diffusers: `classify_height_width_bin(height, width, ASPECT_RATIO_480_BIN)`."""
    bins = _BINS.get(int(sample_size))
    if bins is None:
        return None
    ratio = height / width
    return bins[min(bins, key=lambda r: abs(r - ratio))]


class SanaVideoPipeline:
    """SANA-Video txt2vid on gpustd. Components as diffusers names them;
    `scheduler_config` is the folder's `scheduler/scheduler_config.json`."""

    family = "SANA-Video"

    def __init__(self, *, transformer: SanaVideoTransformer3DModel, vae: AutoencoderKLWan,
                 text_encoder: LLMTextModel, tokenizer: LLMTokenizer,
                 scheduler_config: dict[str, Any]) -> None:
        self.transformer, self.vae = transformer, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.scheduler_config = dict(scheduler_config)
        self.memory_mode = None  # no memory modes yet (what the CLI's report reads)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None
                        ) -> SanaVideoPipeline:
        """Load a SANA-Video diffusers folder (`load_sana_video_folder`) onto `device` in
        `dtype`."""
        weights = load_sana_video_folder(path, variant=variant)
        transformer, text = weights.transformer, weights.text_encoder
        assert transformer is not None and text is not None and weights.vae is not None
        vae_config = weights.vae.config
        place = {"dtype": dtype, "device": device or default_device()}
        load = partial(load_network, device=place["device"], offload_to_host=False)
        return cls(
            text_encoder=load(lambda: LLMTextModel(text.config, **place), text),
            transformer=load(lambda: SanaVideoTransformer3DModel(transformer.config, **place),
                             transformer),
            vae=load(lambda: AutoencoderKLWan(vae_config, **place), weights.vae),
            tokenizer=LLMTokenizer(weights.tokenizer_dir),
            scheduler_config=weights.scheduler_config)

    @property
    def size_multiple(self) -> int:
        """What height and width must be multiples of: 32 (diffusers' check), or the VAE's
        factor times the patch where that is more."""
        return max(32, int(self.vae.spatial_factor) * int(self.transformer.config["patch_size"][1]))

    def prompt_states(self, prompts: Sequence[str], negatives: Sequence[str] | None,
                      max_sequence_length: int) -> tuple[np.ndarray, np.ndarray]:
        """(states, mask) of the negatives (no instruction) then the prompts (behind
        SANA_VIDEO_INSTRUCTION), both max_sequence_length rows as diffusers pads them."""
        states, mask = encode(self.text_encoder, self.tokenizer, prompts,
                              max_sequence_length=max_sequence_length,
                              instruction=SANA_VIDEO_INSTRUCTION)
        if negatives is None:
            return states, mask
        neg_states, neg_mask = encode(self.text_encoder, self.tokenizer, negatives,
                                      max_sequence_length=max_sequence_length, instruction=())
        return np.concatenate([neg_states, states]), np.concatenate([neg_mask, mask])

    def decode(self, latents: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        """Videos (B, T, H, W, 3) in [0, 1] from the latent video (B, C, F, h, w): the VAE's
        latents_std and latents_mean put back, decoded; `size` (height, width): each frame
        resized to cover it and cropped (diffusers' binning), before the clip."""
        vae = self.vae
        z = vae.denormalize(asarray(latents, dtype=vae.post_quant_conv.weight.dtype,
                                    device=vae.device))
        video = vae.decode(z).numpy().astype(np.float32)
        check_decoded(video, vae)
        if size is not None:
            batch, channels, frames = video.shape[:3]
            flat = video.transpose(0, 2, 1, 3, 4).reshape(batch * frames, channels,
                                                          *video.shape[3:])
            flat = resize_and_crop(flat, *size)
            video = flat.reshape(batch, frames, channels, *size).transpose(0, 2, 1, 3, 4)
        return np.clip(video / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 4, 1)  # type: ignore[no-any-return]

    def image_latents(self, image: Any, height: int, width: int) -> np.ndarray:
        """The picture's normalised latent frame (1, C, 1, h, w): resized to height x width
        (Lanczos), encoded by the VAE (the posterior's mean), (z - latents_mean) /
        latents_std. diffusers: SanaImageToVideoPipeline.prepare_latents' image latents."""
        vae = self.vae
        pixels = to_unit_image(image, width, height)[:, :, None]
        mean, _ = vae.encode(asarray(pixels, dtype=vae.post_quant_conv.weight.dtype,
                                     device=vae.device))
        return vae.normalize(mean).numpy().astype(np.float32)  # type: ignore[no-any-return]

    def __call__(self, prompt: str | Sequence[str], *, negative_prompt: str = "",
                 height: int = 480, width: int = 832, num_frames: int = 81,
                 num_inference_steps: int = 50, guidance_scale: float = 6.0, seed: int = 0,
                 rng: str = "torch", max_sequence_length: int = 300,
                 use_resolution_binning: bool = True, latents: np.ndarray | None = None,
                 image: Any = None, callback: StepCallback | None = None,
                 output_type: str = "np") -> np.ndarray:
        """Videos (B, num_frames, height, width, 3) in [0, 1] ("np") or the final latent
        video ("latent"; at the bin's size where binning moved it). `image` (PIL or HxWx3
        uint8): image-to-video, the picture (resized, Lanczos, to the size drawn) encoded as
        the first latent frame and held there (its timestep 0, never stepped). `seed` and
        `rng`
        ("torch", as diffusers; "numpy") draw the noise unless `latents` is given.
        `callback(done, total, latents)` after every step (False stops). diffusers:
        `SanaVideoPipeline(prompt, negative_prompt=, height=, width=, frames=,
        num_inference_steps=, guidance_scale=, generator=, use_resolution_binning=,
        output_type="np").frames` (SanaImageToVideoPipeline's with `image=`)."""
        prompts = prompt_list(prompt)
        if output_type not in ("np", "latent"):
            raise ValueError(f"output_type must be 'np' or 'latent', got {output_type!r}")
        asked = (height, width)
        if use_resolution_binning:
            height, width = video_bin(int(self.transformer.config["sample_size"]),
                                      height, width) or asked
        multiple, temporal = self.size_multiple, int(self.vae.temporal_factor)
        if height % multiple or width % multiple or height < multiple or width < multiple:
            raise ValueError(f"width and height must be multiples of {multiple} for "
                             f"SANA-Video, got {width}x{height}")
        if num_frames < 1 or (num_frames - 1) % temporal:
            raise ValueError(f"SANA-Video draws 1 + {temporal}k frames, got {num_frames}; "
                             f"try {max(1, (num_frames - 1) // temporal * temporal + 1)}")
        if num_inference_steps < 1:
            raise ValueError(f"steps must be at least 1, got {num_inference_steps}")
        batch, guided = len(prompts), guidance_scale > 1
        states, mask = self.prompt_states(prompts, [negative_prompt] * batch if guided else None,
                                          max_sequence_length)
        model = self.transformer
        on_device = asarray(states, dtype=model.dtype, device=model.device)
        spatial = int(self.vae.spatial_factor)
        shape = (batch, int(model.config["in_channels"]), (num_frames - 1) // temporal + 1,
                 height // spatial, width // spatial)
        if latents is None:
            latents = make_generator(rng, seed).standard_normal(shape).astype(np.float32)
        latents = np.asarray(latents, np.float32)
        if latents.shape != shape:
            raise ValueError(f"latents must have shape {shape}, got {latents.shape}")
        held = 0 if image is None else 1  # latent frames kept as given
        if image is not None:
            latents = latents.copy()
            latents[:, :, :1] = self.image_latents(image, height, width)
        scheduler = FlowDPMSolverMultistepScheduler.from_config(self.scheduler_config)
        scheduler.set_timesteps(num_inference_steps)
        rows = 2 * batch if guided else batch
        for i, t in enumerate(scheduler.timesteps):
            x = np.concatenate([latents, latents]) if guided else latents
            times = np.full((rows, shape[2]), np.float32(t), np.float32)
            times[:, :held] = 0  # diffusers: t * (1 - conditioning_mask)
            out = model(asarray(x, dtype=model.dtype, device=model.device), on_device,
                        times if held else times[:, 0], encoder_attention_mask=mask
                        ).numpy().astype(np.float32)
            out = out[:, :shape[1]]  # a learned-sigma model's second half dropped
            velocity = out if not guided else (
                out[:batch] + np.float32(guidance_scale) * (out[batch:] - out[:batch]))
            stepped = np.asarray(scheduler.step(velocity[:, :, held:], t, latents[:, :, held:]),
                                 np.float32)
            latents = np.concatenate([latents[:, :, :held], stepped], axis=2)
            if callback is not None and callback(i + 1, num_inference_steps, latents) is False:
                break
        if output_type == "latent":
            return latents
        return self.decode(latents, asked if asked != (height, width) else None)

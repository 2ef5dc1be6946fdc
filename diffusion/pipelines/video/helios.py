"""PKU-YuanGroup's Helios (14B, real-time long video from text or a picture), as diffusers'
HeliosPipeline draws it: UMT5's states of the prompt (Wan's encoding) condition the Helios
transformer (models.helios) over Wan 2.1 VAE latents, one chunk of latent frames after another.
Each chunk starts from fresh noise and is denoised in front of its history: the first latent
frame of the video (zeros while the first chunk is drawn; a given picture's latents in
image-to-video, pipelines.video.helios_image), the last frame made and, coarser, the 2 and the
16 before it (zeros where the video is shorter). The folder's HeliosScheduler (one stage:
pipelines.video.helios_schedule) steps each chunk; CFG as diffusers', `neg + g (pos - neg)`.
Each chunk is decoded by itself (its 9 latent frames: 33 frames), the video cut to 1 + 4k
frames; so `num_frames` asks for ceil(num_frames / 33) chunks. With the torch RNG a seed gives
diffusers' video (`generator=torch.Generator("cpu").manual_seed(seed)`). Its networks are Wan's
(UMT5, a transformer of blocks, Wan 2.1's VAE), and so are its memory modes
(`set_memory_mode`, wan_memory: the steps and each chunk's decode take turns), its float32 VAE
(`use_float32_vae`) and its LoRAs' targets.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from functools import partial
from types import SimpleNamespace
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import Tensor, asarray

from ...loaders.helios import load_helios_folder
from ...models.helios import HeliosTransformer3DModel
from ...models.t5 import UMT5EncoderModel
from ...models.wan_vae import AutoencoderKLWan
from ...noise.rng import make_generator
from ...text.t5_tokenizer import T5Tokenizer
from ..contract import Denoisers
from ..finite import check_decoded
from ..flow.flow_memory import load_network
from ..observer import StepCallback
from .flow_video import prompt_list
from .helios_image import image_history, video_history
from .helios_schedule import helios_mu, helios_scheduler, helios_sigmas
from .wan import clean_prompt
from .wan_memory import WanMemoryModes
from .wan_vae_passes import WanVaePasses

__all__ = ["HeliosPipeline"]


class HeliosPipeline(WanMemoryModes, WanVaePasses):
    """Helios txt2vid on gpustd. Components as diffusers names them; `scheduler_config` is
    the folder's `scheduler/scheduler_config.json`; `offload`: one network on the GPU at a
    time, the others' weights in host memory."""

    family = "Helios"
    image_encoder = transformer_2 = None  # (Wan's memory modes ask for them)

    def __init__(self, *, transformer: HeliosTransformer3DModel, vae: AutoencoderKLWan,
                 text_encoder: UMT5EncoderModel, tokenizer: T5Tokenizer,
                 scheduler_config: dict[str, Any], offload: bool = False) -> None:
        self.transformer, self.vae = transformer, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.scheduler_config = dict(scheduler_config)
        helios_scheduler(self.scheduler_config)  # a pyramid's schedule refused
        self.offload = offload

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        offload: bool = False) -> HeliosPipeline:
        """Load a Helios diffusers folder (`load_helios_folder`) onto `device` in `dtype`;
        `offload`: each network goes to host memory as soon as it is loaded, for `on_gpu` or a
        memory mode to bring in as it runs."""
        weights = load_helios_folder(path, variant=variant)
        helios_scheduler(weights.scheduler_config)  # refused before the weights load
        transformer, text, vae = weights.transformer, weights.text_encoder, weights.vae
        assert transformer is not None and text is not None
        place = {"dtype": dtype, "device": device or default_device()}
        load = partial(load_network, device=place["device"], offload_to_host=offload)
        return cls(
            text_encoder=load(lambda: UMT5EncoderModel(text.config, **place), text),
            transformer=load(lambda: HeliosTransformer3DModel(transformer.config, **place),
                             transformer),
            vae=load(lambda: AutoencoderKLWan(vae.config, **place), vae),
            tokenizer=T5Tokenizer(weights.tokenizer_dir),
            scheduler_config=weights.scheduler_config, offload=offload)

    def lora_targets(self) -> Any:
        """What a `LoraManager` patches: the transformer (diffusers' and PEFT's
        `transformer.` keys, as HeliosPipeline.load_lora_weights reads them)."""
        return SimpleNamespace(unet=self.transformer, transformer=self.transformer)

    @property
    def denoisers(self) -> Denoisers:
        """The transformer, as a contract's pipeline says it."""
        return Denoisers((self.transformer,), "transformer")

    @property
    def size_multiple(self) -> int:
        """What height and width must be multiples of: 16 (diffusers' check; the VAE's 8
        times the patch's 2)."""
        return max(16, int(self.vae.spatial_factor) * int(self.transformer.config["patch_size"][1]))

    def prompt_states(self, prompts: Sequence[str], max_sequence_length: int) -> np.ndarray:
        """UMT5's states (B, max_sequence_length, d_model) of each prompt's tokens, zeros
        after them. diffusers: `HeliosPipeline.encode_prompt` (Wan's)."""
        ids, mask = self.tokenizer.encode([clean_prompt(p) for p in prompts],
                                          max_sequence_length)
        states = self.text_encoder.forward_each([(ids, mask)])[0]
        return states.numpy().astype(np.float32) * (mask[:, :, None] != 0)  # type: ignore[no-any-return]

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Frames (B, 3, T, H, W) in [-1, 1] of one chunk's normalised latents."""
        vae = self.vae
        z = vae.denormalize(asarray(latents, dtype=vae.post_quant_conv.weight.dtype,
                                    device=vae.device))
        video = vae.decode(z).numpy().astype(np.float32)
        check_decoded(video, vae)
        return video  # type: ignore[no-any-return]

    def check(self, height: int, width: int, num_frames: int, steps: int,
              chunk_frames: int, history_sizes: Sequence[int]) -> None:
        """ValueError in one line for a setting Helios cannot run."""
        multiple = self.size_multiple
        if height % multiple or width % multiple or height < multiple or width < multiple:
            raise ValueError(f"width and height must be multiples of {multiple} for Helios, "
                             f"got {width}x{height}")
        if num_frames < 1:
            raise ValueError(f"frames must be at least 1, got {num_frames}")
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        if chunk_frames < 1 or len(history_sizes) != 3 or min(history_sizes) < 1:
            raise ValueError("Helios takes at least 1 latent frame a chunk and three history "
                             f"sizes of at least 1, got {chunk_frames} and {history_sizes}")

    def __call__(self, prompt: str | Sequence[str], *, negative_prompt: str = "",
                 height: int = 384, width: int = 640, num_frames: int = 132,
                 num_inference_steps: int = 50, guidance_scale: float = 5.0, seed: int = 0,
                 rng: str = "torch", max_sequence_length: int = 512,
                 history_sizes: Sequence[int] = (16, 2, 1), num_latent_frames_per_chunk: int = 9,
                 image: Any = None, video: Sequence[Any] | None = None,
                 callback: StepCallback | None = None,
                 output_type: str = "np") -> np.ndarray:
        """Videos (B, T, height, width, 3) in [0, 1] ("np"; T = 1 + 4k, the chunks' frames
        cut) or the latent video of every chunk ("latent"). `seed` and `rng` ("torch", as
        diffusers; "numpy") draw each chunk's noise in turn. `history_sizes`: the long, mid
        and short history's latent frames; `num_latent_frames_per_chunk`: a chunk's.
        `image` (PIL or HxWx3 uint8): image-to-video, the picture's latents ahead of every
        chunk and as the history's newest frame; `video` (frames, PIL or HxWx3 uint8):
        video-to-video, continued: its first frame's latents ahead of every chunk, its last
        whole chunks as the history (helios_image).
        `callback(done, total, latents)` after every step of every chunk (False stops).
        diffusers: `HeliosPipeline(prompt, negative_prompt=, height=, width=, num_frames=,
        num_inference_steps=, guidance_scale=, generator=, history_sizes=,
        num_latent_frames_per_chunk=, image=, video=, output_type="np").frames`."""
        prompts = prompt_list(prompt)
        if output_type not in ("np", "latent"):
            raise ValueError(f"output_type must be 'np' or 'latent', got {output_type!r}")
        sizes = sorted((int(s) for s in history_sizes), reverse=True)
        chunk = int(num_latent_frames_per_chunk)
        self.check(height, width, num_frames, num_inference_steps, chunk, sizes)
        batch, guided = len(prompts), guidance_scale > 1
        model, temporal = self.transformer, int(self.vae.temporal_factor)
        with self.on_gpu(self.text_encoder):
            states = self.prompt_states(prompts + [negative_prompt] * batch if guided
                                        else prompts, max_sequence_length)
        spatial, channels = int(self.vae.spatial_factor), int(model.config["in_channels"])
        h, w = height // spatial, width // spatial
        window = (chunk - 1) * temporal + 1  # the pixel frames of a chunk
        chunks = max(1, math.ceil(num_frames / window))
        # frame positions: the first frame, long, mid, short history, then the chunk
        cuts = np.cumsum([1, *sizes, chunk])
        indices = {"long": range(1, cuts[1]), "mid": range(cuts[1], cuts[2]),
                   "short": [0, *range(cuts[2], cuts[3])], "chunk": range(cuts[3], cuts[4])}
        history = np.zeros((batch, channels, sum(sizes), h, w), np.float32)
        first = np.zeros((batch, channels, 1, h, w), np.float32)
        mu = helios_mu(chunk * h * w // math.prod(model.patch), self.scheduler_config)
        sigmas = helios_sigmas(num_inference_steps, mu, self.scheduler_config)
        generator = make_generator(rng, seed)
        if image is not None and video is not None:
            raise ValueError("give Helios a picture to animate or a video to continue, not both")
        if image is not None:  # drawn before the chunks' noise, as diffusers does
            with self.on_gpu(self.vae):
                picture, still = image_history(self.vae, image, height, width, chunk,
                                               generator)
            first = np.repeat(picture, batch, axis=0)
            history[:, :, -1:] = np.repeat(still, batch, axis=0)
        if video is not None:
            with self.on_gpu(self.vae):
                picture, given = video_history(self.vae, video, height, width, chunk,
                                               generator)
            first = np.repeat(picture, batch, axis=0)
            history = np.concatenate([history[:, :, :max(0, history.shape[2] - given.shape[2])],
                                      np.repeat(given, batch, axis=0)], axis=2)
        made: list[np.ndarray] = []
        frames: list[np.ndarray] = []
        total, stopped = chunks * num_inference_steps, False
        rows = 2 * batch if guided else batch
        for k in range(chunks):
            recent = history[:, :, -sum(sizes):]
            parts = dict(long=recent[:, :, :sizes[0]], mid=recent[:, :, sizes[0]:-sizes[2]],
                         short=np.concatenate([first, recent[:, :, -sizes[2]:]], axis=2))
            past = {name: (self._upload(np.concatenate([part] * (rows // batch))),
                           list(indices[name])) for name, part in parts.items()}
            latents = generator.standard_normal((batch, channels, chunk, h, w)
                                                ).astype(np.float32)
            scheduler = helios_scheduler(self.scheduler_config)
            scheduler.set_sigmas(sigmas)
            with self.on_gpu(model):  # (under a memory mode: the steps' phase begins)
                if k == 0:
                    context = model.encode_text(asarray(states, dtype=model.dtype,
                                                        device=model.device))
                for i, t in enumerate(scheduler.timesteps):
                    x = np.concatenate([latents] * (rows // batch))
                    out = model(self._upload(x), np.full(rows, t, np.float32), None,
                                context=context, indices_hidden_states=list(indices["chunk"]),
                                history=past).numpy().astype(np.float32)
                    velocity = out if not guided else (
                        out[batch:] + np.float32(guidance_scale) * (out[:batch] - out[batch:]))
                    latents = np.asarray(scheduler.step(velocity, t, latents), np.float32)
                    done = k * num_inference_steps + i + 1
                    if callback is not None and callback(done, total, latents) is False:
                        stopped = True  # this chunk as it is now ends the video
                        break
            if k == 0 and image is None and video is None:
                first = latents[:, :, :1]  # the video's first frame, held for every chunk
            history = np.concatenate([history, latents], axis=2)
            made.append(latents)
            if output_type == "np":
                with self.on_gpu(self.vae):
                    frames.append(self.decode(latents))
            if stopped:
                break
        if output_type == "latent":
            return np.concatenate(made, axis=2)
        return self._frames(frames)

    def _upload(self, x: np.ndarray) -> Tensor:
        model = self.transformer
        return asarray(x, dtype=model.dtype, device=model.device)

    def _frames(self, decoded: list[np.ndarray]) -> np.ndarray:
        """The chunks' frames (each (B, 3, T, H, W) in [-1, 1]) one after the other, cut to
        1 + 4k, as (B, T, H, W, 3) in [0, 1]."""
        video = np.concatenate(decoded, axis=2)
        temporal = int(self.vae.temporal_factor)
        video = video[:, :, :(video.shape[2] - 1) // temporal * temporal + 1]
        return np.clip(video / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 4, 1)  # type: ignore[no-any-return]

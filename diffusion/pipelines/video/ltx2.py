"""LTX-2 text-to-video with its audio, as diffusers' LTX2Pipeline draws them: the prompt read by
Gemma 3 and the text connectors (models.ltx2_prompt: a video and an audio context); noise of
(B, C, 1 + (frames - 1) / 8, H / 32, W / 32) video latents packed to tokens, then of the audio
latents (B, C', audio frames, mel bins / 4) that the frames at `frame_rate` last, packed;
FlowMatchEulerDiscreteScheduler over linspace(1, 1/n, n) shifted by mu from the video token
count, a copy of it stepping the audio; at each step the transformer's velocities for both
streams guided in x0 space (ltx2_guidance): CFG against the negative prompt with
guidance_rescale, STG (the self-attention of `stg_blocks` perturbed, on models with
perturbed_attn: diffusers' pass changes nothing elsewhere, so it is skipped there) and
modality guidance (the streams' attention to each other off), each with a video and an audio
scale; then the video VAE (a timestep-conditioned decoder's decode_timestep and noise) and
the audio VAE and vocoder. With the torch RNG a seed gives diffusers' video and waveform
(`generator=torch.Generator("cpu").manual_seed(seed)`). First Block Cache (`cache`) skips the
transformer's later blocks on a step whose first block changed little, each pass deciding
for itself.

    pipe = LTX2Pipeline.from_pretrained("LTX-2")
    out = pipe("a fox runs through snow", height=512, width=768, num_frames=121, seed=7)
    out.frames, out.audio, out.sample_rate  # (B, T, H, W, 3), (B, 2, samples), 24000

`offload` keeps one network on the GPU at a time; the WebUI's memory modes (--medvram,
--lowvram, --max-vram) are the flow families' (flow_memory over `ltx2_passes.ltx2_layout`:
Gemma and the connectors one unit, the transformer whole or its blocks streamed, the video
VAE), the audio VAE and vocoder brought in for their decode; no network runs from a capture,
so the video and audio are the plain mode's, bitwise.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import Tensor, asarray
from gpustd.nn.offload import offload as offload_weights
from gpustd.nn.offload import restore as restore_weights

from ...loaders.ltx2.folder import load_ltx2_folder
from ...models.llm import LLMTextModel
from ...models.ltx2 import LTX2VideoTransformer3DModel
from ...models.ltx2_audio import AutoencoderKLLTX2Audio
from ...models.ltx2_audio_wav import decode_audio
from ...models.ltx2_connectors import LTX2TextConnectors
from ...models.ltx2_prompt import MAX_SEQUENCE_LENGTH, ltx2_prompt_states
from ...models.ltx2_vae import AutoencoderKLLTX2Video
from ...models.ltx2_vocoder_bwe import ltx2_vocoder
from ...models.step_cache import StepCache
from ...noise.rng import RNG_SOURCES, make_generator
from ...sampling.schedulers.flow_match_euler import FlowMatchEulerDiscreteScheduler
from ...text.llm_tokenizer import LLMTokenizer
from ..contract import Denoisers
from ..finite import check_decoded, check_latents
from ..flow.flow_memory import FlowMemoryPlan, load_network
from ..sd.memory import MemoryMode
from . import ltx2_start as start_
from .ltx2_guidance import LTX2Guidance, audio_latent_frames, ltx2_mu, pack_video, unpack_video
from .ltx2_passes import LTX2Passes, ltx2_layout
from .ltx2_start import LTX2Latents
from .wan_refuse import check_frame_count

__all__ = ["LTX2Output", "LTX2Pipeline"]

StepCallback = Callable[[int, int, np.ndarray], bool | None]
# the audio VAE's compression along time and mel bins, whatever its config (diffusers'
# LATENT_DOWNSAMPLE_FACTOR)
_AUDIO_FACTOR = 4


@dataclass
class LTX2Output:
    """Videos (B, T, H, W, 3) float in [0, 1]; their audio (B, channels, samples) float32 at
    `sample_rate` Hz (None where the audio was not decoded)."""

    frames: np.ndarray
    audio: np.ndarray | None
    sample_rate: int


class LTX2Pipeline:
    """A loaded LTX-2 diffusers folder (module docstring); components as diffusers names
    them."""

    def __init__(self, *, transformer: LTX2VideoTransformer3DModel,
                 vae: AutoencoderKLLTX2Video, audio_vae: AutoencoderKLLTX2Audio, vocoder: Any,
                 text_encoder: LLMTextModel, connectors: LTX2TextConnectors,
                 tokenizer: LLMTokenizer, scheduler_config: dict[str, Any],
                 offload: bool = False) -> None:
        self.transformer, self.vae, self.audio_vae = transformer, vae, audio_vae
        self.vocoder, self.text_encoder, self.connectors = vocoder, text_encoder, connectors
        self.tokenizer, self.scheduler_config = tokenizer, dict(scheduler_config)
        self.offload = offload
        self._memory: FlowMemoryPlan | None = None  # set_memory_mode's

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        offload: bool = False) -> LTX2Pipeline:
        """Load an LTX2Pipeline diffusers folder (loaders.ltx2.load_ltx2_folder) onto
        `device` in `dtype` (the audio VAE and vocoder in float32: their output is the
        waveform); `offload`: each network to host memory once loaded, on the GPU only while
        it runs."""
        weights = load_ltx2_folder(path, variant=variant)
        place = {"dtype": dtype, "device": device or default_device()}

        def load(build: Callable[[], Any], part: Any) -> Any:
            return load_network(build, part, device=place["device"], offload_to_host=offload)

        text, audio = weights.text, weights.audio_vae
        vocoder = ltx2_vocoder(weights.vocoder, device=place["device"])
        if offload:
            offload_weights(vocoder)
        return cls(
            text_encoder=load(lambda: LLMTextModel(text.text_encoder.config, **place),
                              text.text_encoder),
            connectors=load(lambda: LTX2TextConnectors(text.connectors.config, **place),
                            text.connectors),
            transformer=load(lambda: LTX2VideoTransformer3DModel(weights.transformer.config,
                                                                 **place),
                             weights.transformer),
            vae=load(lambda: AutoencoderKLLTX2Video(weights.vae.config, **place), weights.vae),
            audio_vae=load(lambda: AutoencoderKLLTX2Audio(audio.config,
                                                          device=place["device"]), audio),
            vocoder=vocoder,
            tokenizer=LLMTokenizer(text.tokenizer_dir),
            scheduler_config=weights.scheduler_config, offload=offload)

    def _networks(self) -> tuple[Any, ...]:
        return (self.text_encoder, self.connectors, self.transformer, self.vae,
                self.audio_vae, self.vocoder)

    @property
    def memory_mode(self) -> MemoryMode | None:
        return None if self._memory is None else self._memory.mode

    def set_memory_mode(self, mode: MemoryMode) -> None:
        """Run in the WebUI's --medvram / --lowvram / --max-vram mode (module docstring;
        all off: every weight on the GPU, or each network whole in turn where loaded with
        `offload`)."""
        if self._memory is not None:
            self._memory.release()
            self._memory = None
        if mode:
            self._memory = FlowMemoryPlan(ltx2_layout(self), mode)

    def _next_phase(self) -> None:
        """Under a memory mode, the steps or the decode begin: the units of the phase before
        leave and the pool is emptied (WanMemoryPlan.next_phase says why)."""
        if self._memory is not None:
            self._memory.residency.evict_all()
            self._memory.residency.device.empty_pool()

    @contextlib.contextmanager
    def on_gpu(self, *networks: Any) -> Iterator[None]:
        """The `networks`' weights on the GPU for the block (offloading: the others' in host
        memory, then they go back there; under a memory mode its units come in as they run,
        and the audio VAE and vocoder, outside its plan, for the block)."""
        if self._memory is not None:
            networks = tuple(n for n in networks if n in (self.audio_vae, self.vocoder))
        elif not self.offload:
            yield
            return
        else:
            for other in self._networks():
                offload_weights(other)
        for network in networks:
            restore_weights(network)
        try:
            yield
        finally:
            for network in networks:
                offload_weights(network)

    @property
    def denoisers(self) -> Denoisers:
        """The transformer, as a contract's pipeline says it."""
        return Denoisers((self.transformer,), "transformer")

    @property
    def sample_rate(self) -> int:
        """The waveform's rate: the vocoder's output rate (24 kHz for LTX-2)."""
        return int(self.vocoder.sample_rate)

    def encode_prompt(self, prompts: Sequence[str], max_sequence_length: int
                      ) -> tuple[Tensor, Tensor, np.ndarray]:
        """(video context, audio context, mask) of `prompts`, the transformer's
        (encode_text'd). diffusers: `encode_prompt` then `connectors(...)`."""
        with self.on_gpu(self.text_encoder, self.connectors):
            video, audio, mask = ltx2_prompt_states(self.text_encoder, self.connectors,
                                                    self.tokenizer, list(prompts),
                                                    max_sequence_length)
        with self.on_gpu(self.transformer):
            return (*self.transformer.encode_text(video, audio), mask)

    def check(self, *, height: int, width: int, num_frames: int, steps: int,
              frame_rate: float, rng: str, guidance: LTX2Guidance, fixed: bool = False
              ) -> None:
        """ValueError in one line for a setting this pipeline cannot run (`fixed`: the
        sigmas are given, used as they are)."""
        temporal = int(self.vae.temporal_compression_ratio)
        check_frame_count(num_frames, temporal)
        multiple = int(self.vae.spatial_compression_ratio)
        if height < multiple or width < multiple or height % multiple or width % multiple:
            raise ValueError(f"width and height must be multiples of {multiple} for LTX-2, "
                             f"got {width}x{height}")
        if steps < 2 and self.scheduler_config.get("shift_terminal") and not fixed:
            # one sigma, 1, stretched to end at shift_terminal: 0 / 0 (NaN in diffusers too)
            raise ValueError(f"LTX-2's schedule (its shift_terminal) needs at least 2 steps, "
                             f"got {steps}")
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        if not np.isfinite(frame_rate) or frame_rate <= 0:
            raise ValueError(f"frame_rate must be a positive number, got {frame_rate!r}")
        if rng not in RNG_SOURCES:
            raise ValueError(f"rng must be one of {RNG_SOURCES}, got {rng!r}")
        layers = len(self.transformer.transformer_blocks)
        if guidance.stg and not guidance.stg_blocks:
            raise ValueError("STG is on (stg_scale > 0) but no blocks are given: give "
                             "stg_blocks, or stg_scale 0")
        perturbs = guidance.stg and self.transformer.config["perturbed_attn"]
        if perturbs and any(not 0 <= b < layers for b in guidance.stg_blocks):
            raise ValueError(f"stg_blocks {list(guidance.stg_blocks)} must be transformer "
                             f"blocks 0 to {layers - 1}")

    def __call__(self, prompt: str | Sequence[str], *, negative_prompt: str | None = None,
                 image: Any = None, image_crf: int | None = None, height: int = 512,
                 width: int = 768, num_frames: int = 121, frame_rate: float = 24.0,
                 num_inference_steps: int = 30, guidance: LTX2Guidance | None = None,
                 seed: int = 0, rng: str = "torch", decode_timestep: float = 0.0,
                 decode_noise_scale: float | None = None,
                 max_sequence_length: int = MAX_SEQUENCE_LENGTH, audio: bool = True,
                 callback: StepCallback | None = None,
                 cache: StepCache | None = None) -> LTX2Output:
        """Videos and their audio for `prompt` (one or a list): LTX2Output. `image`: image to
        video's first frame (a PIL image or (H, W, 3) uint8, for every prompt; ltx2_start),
        `image_crf` its H.264 re-compression (None: the model's, 0: none); `negative_prompt`:
        None is diffusers' "" ; `guidance`: the scales (LTX2Guidance(): diffusers' defaults);
        `audio` False: the audio is denoised with the video (they attend to each other) but
        not decoded. `callback(done, total, video tokens)` after every step (False stops);
        `cache`: First Block Cache, a branch for each pass. diffusers: `LTX2Pipeline(prompt,
        ...)` or `LTX2ImageToVideoPipeline(image, prompt, negative_prompt=, height=, width=,
        num_frames=, frame_rate=, num_inference_steps=, guidance_scale=, ...,
        decode_timestep=, generator=torch.Generator().manual_seed(seed), output_type="np")`
        (`cache`: its FirstBlockCache hook, the blocks' audio their second stream)."""
        state = self.denoise(prompt, negative_prompt=negative_prompt, image=image,
                             image_crf=image_crf, height=height, width=width,
                             num_frames=num_frames, frame_rate=frame_rate,
                             num_inference_steps=num_inference_steps, guidance=guidance,
                             seed=seed, rng=rng, max_sequence_length=max_sequence_length,
                             callback=callback, cache=cache)
        return self.finish(state, decode_timestep, decode_noise_scale, audio)

    def denoise(self, prompt: str | Sequence[str], *, negative_prompt: str | None = None,
                image: Any = None, image_crf: int | None = None, height: int = 512,
                width: int = 768, num_frames: int = 121, frame_rate: float = 24.0,
                num_inference_steps: int = 30, guidance: LTX2Guidance | None = None,
                seed: int = 0, rng: str = "torch",
                max_sequence_length: int = MAX_SEQUENCE_LENGTH,
                start: LTX2Latents | None = None, sigmas: Sequence[float] | None = None,
                callback: StepCallback | None = None,
                cache: StepCache | None = None) -> LTX2Latents:
        """`__call__`'s steps, not decoded (diffusers' `output_type="latent"`). `start`: a
        second stage's (ltx2_two_stage): its latents, of `height` x `width`, re-noised to
        sigmas[0] from its generator (`seed` unused), then stepped over `sigmas` as given (the
        scheduler's dynamic shift and shift_terminal off, as diffusers' recipe sets them);
        with an `image` its latent frame 0 is kept (the picture is not encoded again)."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError("prompt must be a string or a list of strings")
        guidance = guidance or LTX2Guidance()
        if cache is not None and cache.spec.kind != "fbc":
            raise ValueError(f"cache {cache.spec.label}: LTX-2 runs First Block Cache "
                             "(fbc[:THRESHOLD]); the other caches' tables are other models'")
        steps = num_inference_steps if sigmas is None else len(sigmas)
        self.check(height=height, width=width, num_frames=num_frames, steps=steps,
                   frame_rate=frame_rate, rng=rng, guidance=guidance, fixed=sigmas is not None)
        batch = len(prompts)
        # 1. the prompts' contexts, the negatives' first (diffusers' batch order)
        texts = [negative_prompt or ""] * batch + prompts if guidance.cfg else prompts
        video_text, audio_text, mask = self.encode_prompt(texts, max_sequence_length)
        # 2. the latents: the video's, then the audio's (noise, or a start's re-noised)
        model, spatial = self.transformer, int(self.vae.spatial_compression_ratio)
        grid = ((num_frames - 1) // int(self.vae.temporal_compression_ratio) + 1,
                height // spatial, width // spatial)
        acfg = self.audio_vae.config
        audio_frames = audio_latent_frames(num_frames, frame_rate, int(acfg["sample_rate"]),
                                           int(acfg["mel_hop_length"]), _AUDIO_FACTOR)
        audio_shape = (batch, int(acfg["latent_channels"]), audio_frames,
                       int(acfg["mel_bins"]) // _AUDIO_FACTOR)
        video_shape = (batch, int(model.config["in_channels"]), *grid)
        kept = start_.first_frame_mask(1, grid)[0] if image is not None else None
        if start is None:
            generator = make_generator(rng, seed)
            latents, audio_latents = self._noise(generator, video_shape, audio_shape, image,
                                                 image_crf)
        else:
            generator = start.generator
            latents, audio_latents = start_.restart(start, video_shape, audio_shape, kept,
                                                    float(sigmas[0]) if sigmas else 0.0)
        # 3. the schedule: the video's shift for both streams
        config = self.scheduler_config if sigmas is None else {
            **self.scheduler_config, "use_dynamic_shifting": False, "shift_terminal": None}
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps) if sigmas is None
                                else np.asarray(sigmas, np.float64),
                                mu=ltx2_mu(latents.shape[1], self.scheduler_config))
        audio_scheduler = copy.deepcopy(scheduler)
        run = LTX2Passes(model, guidance, video_text, audio_text, mask, grid, frame_rate,
                         audio_frames, batch, kept, cache)
        first = None if kept is None else kept.astype(bool)
        self._next_phase()
        with self.on_gpu(model):
            for i, t in enumerate(scheduler.timesteps):
                sigma = float(scheduler.sigmas[i])
                video_v, audio_v = run.step(latents, audio_latents, float(t), sigma)
                stepped = scheduler.step(video_v, t, latents).astype(np.float32)
                if first is not None:  # the kept first frame's tokens are not stepped
                    stepped[:, first] = latents[:, first]
                latents = stepped
                audio_latents = audio_scheduler.step(audio_v, t, audio_latents
                                                     ).astype(np.float32)
                if callback is not None and callback(i + 1, len(scheduler.timesteps),
                                                     latents) is False:
                    break
        check_latents(latents, self)  # NaN said, not decoded into black frames
        return LTX2Latents(unpack_video(latents, *grid), audio_latents, generator,
                           kept is not None)

    def _noise(self, generator: Any, video_shape: tuple[int, ...],
               audio_shape: tuple[int, ...], image: Any, crf: int | None
               ) -> tuple[np.ndarray, np.ndarray]:
        """A first stage's packed (video, audio) latents: noise, with image to video's
        encoded picture as latent frame 0 (ltx2_start)."""
        video = generator.standard_normal(video_shape).astype(np.float32)
        if image is not None:
            with self.on_gpu(self.vae):
                crf = start_.default_crf(self.text_encoder.config) if crf is None else crf
                spatial = int(self.vae.spatial_compression_ratio)
                frame = start_.image_latents(self.vae, image, video_shape[3] * spatial,
                                      video_shape[4] * spatial, crf)
            video[:, :, :1] = frame  # diffusers: init * mask + noise * (1 - mask)
        noise = generator.standard_normal(audio_shape).astype(np.float32)
        return pack_video(video), start_.pack_audio(noise)

    def finish(self, state: LTX2Latents, decode_timestep: float = 0.0,
               decode_noise_scale: float | None = None, audio: bool = True) -> LTX2Output:
        """`denoise`'s latents decoded: the video (a timestep-conditioned decoder's noise
        drawn on from its generator) and, with `audio`, the waveform."""
        video = state.video
        if self.vae.config["timestep_conditioning"]:  # diffusers draws this noise after
            scale = decode_timestep if decode_noise_scale is None else decode_noise_scale
            drawn = state.generator.standard_normal(video.shape).astype(np.float32)
            video = ((1 - np.float32(scale)) * video + np.float32(scale) * drawn
                     ).astype(np.float32)
        self._next_phase()
        frames = self.decode(video, decode_timestep)
        waveform = self.decode_audio(state.audio) if audio else None
        return LTX2Output(frames, waveform, self.sample_rate)

    def decode(self, latents: np.ndarray, timestep: float = 0.0) -> np.ndarray:
        """Videos (B, T, H, W, 3) in [0, 1] from the transformer's unpacked latents (B, C, F,
        h, w): denormalized and decoded (at `timestep` where the decoder is
        timestep-conditioned), as LTX2Pipeline decodes; VaeNonFiniteError where the VAE gave
        NaN or infinity (not black frames)."""
        vae, cfg = self.vae, self.vae.config
        with self.on_gpu(vae):  # denormalized on the host: a memory mode brings the VAE in
            mean, std = (_host(p).reshape(1, -1, 1, 1, 1)
                         for p in (vae.latents_mean, vae.latents_std))
            z = latents * std / np.float32(cfg["scaling_factor"]) + mean
            place = vae.latents_mean  # the VAE's dtype and device
            video = vae.decode(asarray(z, dtype=place.dtype, device=place.device),
                               timestep).numpy().astype(np.float32)
        check_decoded(video, vae)
        return np.clip(video / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 4, 1)

    def decode_audio(self, tokens: np.ndarray) -> np.ndarray:
        """Waveforms (B, channels, samples) float32 at `sample_rate` from the transformer's
        packed audio latents (B, T, C x M): denormalized, unpacked, the audio VAE's mel,
        the vocoder. diffusers: the end of `LTX2Pipeline.__call__`."""
        vae = self.audio_vae
        with self.on_gpu(vae, self.vocoder):
            packed = tokens * _host(vae.latents_std) + _host(vae.latents_mean)
            b, t, _ = packed.shape
            latents = packed.reshape(b, t, int(vae.config["latent_channels"]), -1)
            waveform, _ = decode_audio(vae, self.vocoder, latents.transpose(0, 2, 1, 3))
        check_decoded(waveform, vae)
        return waveform


def _host(parameter: Any) -> np.ndarray:
    """A parameter's values as float32 on the host (wherever its weights are now)."""
    return np.asarray(parameter.numpy(), np.float32)

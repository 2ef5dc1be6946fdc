"""FLUX.2 klein, as diffusers' Flux2KleinPipeline draws it: the prompt in Qwen3's chat
template (thinking off), padded to 512 tokens, and Qwen3's hidden states after layers 9, 18
and 27 side by side condition the FLUX.2 transformer; FlowMatchEulerDiscreteScheduler
steps the model output from noise over sigmas 1 .. 1/n, shifted by klein's empirical mu
(of the image tokens and the step count); the VAE's batch norm maps the patchified latents
back before FLUX.2's 32-channel VAE decodes. CFG as diffusers': `neg + g * (pos - neg)`
for `guidance_scale` g > 1 against `negative_prompt` (diffusers' is always the empty one),
unless the folder is step-distilled (`is_distilled`: klein 4B/9B, 4 steps without CFG).
With the torch RNG, a seed gives diffusers' picture
(`generator=torch.Generator("cpu").manual_seed(seed)`). Inpainting as
Flux2KleinInpaintPipeline: the picture inpainted (its latent mean) noised by the strength,
the mask shrunk bilinearly to the latents, the kept part put back after every step.

    pipe = Flux2KleinPipeline.from_pretrained("FLUX.2-klein-4B")
    images = pipe("a red circle", height=1024, width=1024, num_inference_steps=4, seed=7)
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import Tensor, asarray, concatenate, take_slice

from ...imaging import rgb_picture
from ...loaders.flow.text_encoder_file import module_stem
from ...loaders.flux2 import flux2_distilled, load_flux2_file, load_flux2_folder, mistral3_text
from ...loaders.flux2.vae_file import load_flux2_vae_file
from ...loaders.formats.diffusers_folder import component_config
from ...loaders.vae_kind import require_vae
from ...loaders.z_image import load_llm_file
from ...models.flux2 import Flux2Transformer2DModel
from ...models.llm import LLMTextModel
from ...models.step_cache import StepCache
from ...models.vae_flux2 import AutoencoderKLFlux2
from ...noise.rng import make_generator
from ...text.llm_tokenizer import LLMTokenizer, qwen3_chat_prompt
from ..finite import check_encoded
from .flow_memory import load_network
from .flow_replay import StepReplay, lent_steps
from .start import StepCallback, check_call, check_sides, flow_schedule, run_euler, single_files
from .vae_file import network_like

__all__ = ["TEXT_LAYERS", "Flux2KleinPipeline", "empirical_mu", "reference_picture",
           "shrunk_picture"]


TEXT_LAYERS = (9, 18, 27)  # Qwen3's hidden states klein reads, side by side


def empirical_mu(image_tokens: int, steps: int) -> float:
    """klein's schedule shift: a line in the step count through fitted values at 10 and 200
    steps (one line in the image tokens past 4300 of them). diffusers:
    `pipeline_flux2_klein.compute_empirical_mu`."""
    a1, b1 = 8.73809524e-05, 1.89833333
    a2, b2 = 0.00016927, 0.45666666
    at_200 = a2 * image_tokens + b2
    if image_tokens > 4300:
        return float(at_200)
    at_10 = a1 * image_tokens + b1
    slope = (at_200 - at_10) / 190.0
    return float(slope * steps + at_200 - 200.0 * slope)


def shrunk_picture(image: Any, area: int = 1024 * 1024, over: int | None = None) -> Any:
    """A reference picture (PIL or HxWx3 uint8) as an RGB PIL picture, resized (Lanczos) to
    about `area` pixels where larger than `over` (None: than `area`, so only shrunk).
    diffusers: Flux2ImageProcessor._resize_to_target_area where the picture is larger."""
    from PIL import Image

    picture = rgb_picture(image)
    width, height = picture.size
    if width * height > (area if over is None else over):
        scale = math.sqrt(area / (width * height))
        picture = picture.resize((int(width * scale), int(height * scale)),
                                 Image.Resampling.LANCZOS)
    return picture


def reference_picture(image: Any, multiple: int = 16, area: int = 1024 * 1024,
                      model: str = "FLUX.2") -> np.ndarray:
    """A reference picture (PIL or HxWx3 uint8) as FLUX.2 reads it: (H, W, 3) float32 in
    [0, 1], shrunk (Lanczos) to about `area` pixels where larger, its sides floored to
    `multiple` (the VAE's 8 and the 2x2 patches) by a centred crop. diffusers:
    Flux2KleinPipeline's step 4 (`_resize_to_target_area`, `preprocess(...,
    resize_mode="crop")`)."""
    picture = shrunk_picture(image, area)
    width, height = picture.size
    cropped_width, cropped_height = width // multiple * multiple, height // multiple * multiple
    if cropped_width < multiple or cropped_height < multiple:
        raise ValueError(f"a {model} reference picture must be at least {multiple}x{multiple} "
                         f"pixels, got {width}x{height}; give a larger one")
    left, top = (width - cropped_width) // 2, (height - cropped_height) // 2
    picture = picture.crop((left, top, left + cropped_width, top + cropped_height))
    return np.asarray(picture, np.float32) / np.float32(255)


def _positions(tokens: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(t, h, w, l) ids: (0, 0, 0, l) per text token, (0, row, column, 0) per patch."""
    text = np.zeros((tokens, 4), np.int64)
    text[:, 3] = np.arange(tokens)
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    image = np.zeros((height * width, 4), np.int64)
    image[:, 1], image[:, 2] = rows.ravel(), cols.ravel()
    return text, image


class Flux2KleinPipeline:
    """FLUX.2 klein txt2img on gpustd. Components as diffusers names them;
    `scheduler_config` is the folder's `scheduler/scheduler_config.json`; `distilled`:
    model_index.json's `is_distilled` (no CFG pass)."""

    text_layers: tuple[int, ...] = TEXT_LAYERS  # the encoder's hidden states, side by side
    text_encoder_kind = "qwen3"  # what a --text-encoder file holds (load_llm_file's kind)

    def __init__(self, *, transformer: Flux2Transformer2DModel, vae: AutoencoderKLFlux2,
                 text_encoder: LLMTextModel, tokenizer: LLMTokenizer,
                 scheduler_config: dict[str, Any], distilled: bool = False) -> None:
        self.transformer, self.vae = transformer, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.scheduler_config = dict(scheduler_config)
        self.distilled = distilled
        self.modules: list[str] = []
        self.vae_scale_factor = 2 ** (len(vae.config["block_out_channels"]) - 1)
        self.step_replay = StepReplay(_transformer_step)  # the plain mode's (flow_replay)
        layers = text_encoder.config["num_hidden_layers"]
        if layers < max(self.text_layers) + 1:
            raise ValueError(f"FLUX.2 reads the text encoder's hidden states after layers "
                             f"{self.text_layers}; this text encoder has {layers} layers")

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        transformer_file: str | os.PathLike[str] | None = None,
                        text_encoder_files: Sequence[str | os.PathLike[str]] = (),
                        offload: bool = False) -> Flux2KleinPipeline:
        """Load a FLUX.2 klein diffusers folder (`load_flux2_folder`) onto `device` in
        `dtype`; `transformer_file`: a single-file transformer in BFL's layout (ComfyUI's
        `flux-2-klein-4b.safetensors`, or a GGUF of one, kept quantized; `load_flux2_file`)
        in place of the folder's, whose name says whether it is distilled
        (`flux2_distilled`); `text_encoder_files`: a text encoder file of
        `text_encoder_kind` (ComfyUI's `qwen_3_4b.safetensors`; `load_llm_file`) in place of
        the folder's text_encoder/, which need then hold no weights; `offload`: each network
        goes to host memory as soon as it is loaded (the text encoder before the transformer
        loads), for a memory mode to bring in as it runs (flow_memory)."""
        files, skip = single_files("FLUX.2", "klein its Qwen3, dev its Mistral Small 3.1",
                                   transformer_file, text_encoder_files)
        weights = load_flux2_folder(path, variant=variant, skip=skip)
        transformer, text_encoder = weights.transformer, weights.text_encoder
        distilled = weights.distilled
        if transformer_file is not None:
            transformer = load_flux2_file(transformer_file,
                                          config=component_config(path, "transformer"))
            distilled = flux2_distilled(transformer_file)
        if files:
            config = component_config(path, "text_encoder")
            if config is not None:  # a Mistral3 config: its language model's
                config = mistral3_text(config, {})[0]
            text_encoder = load_llm_file(files[0], config=config, kind=cls.text_encoder_kind)
        assert transformer is not None and text_encoder is not None
        hidden = text_encoder.config["hidden_size"]
        wanted, count = transformer.config.get("joint_attention_dim"), len(cls.text_layers)
        if wanted is not None and wanted != count * hidden:
            raise ValueError(f"the text encoder's states are {count * hidden} wide "
                             f"({count} layers of {hidden}), the transformer reads "
                             f"{wanted}: klein 4B reads Qwen3-4B, klein 9B Qwen3-8B, dev "
                             "Mistral Small 3.1; give the text encoder that goes with the "
                             "transformer")
        place = {"dtype": dtype, "device": device or default_device()}
        # a GGUF's quantized matrices kept as blocks, fused q/k/v rows cut from them
        load = partial(load_network, device=place["device"], offload_to_host=offload,
                       slices=True)
        # the text encoder first: with `offload` it has left the GPU when the transformer loads
        encoder = load(lambda: LLMTextModel(text_encoder.config, **place), text_encoder)
        pipe = cls(transformer=load(lambda: Flux2Transformer2DModel(transformer.config, **place),
                                    transformer),
                   vae=load(lambda: AutoencoderKLFlux2(weights.vae.config, **place), weights.vae),
                   text_encoder=encoder, tokenizer=LLMTokenizer(weights.tokenizer_dir),
                   scheduler_config=weights.scheduler_config, distilled=distilled)
        pipe.modules = [module_stem(f) for f in files]
        return pipe

    def use_vae_file(self, path: str | os.PathLike[str]) -> None:
        """Decode (and encode references) with FLUX.2's VAE in the file `path`
        (`flux2-vae.safetensors`; `load_flux2_vae_file`), in the place, dtype and config of
        the folder's. WeightsError in one line for another family's VAE or tensors that do
        not fit."""
        require_vae(path, "flux2", int(self.vae.config["latent_channels"]), model="FLUX.2",
                    usual="flux2-vae.safetensors")
        self.vae = network_like(self.vae, load_flux2_vae_file(path, config=self.vae.config),
                                path)

    def encode_prompt(self, prompts: Sequence[str], max_sequence_length: int = 512) -> Tensor:
        """(B, max_sequence_length, 3 * hidden) in the transformer's dtype: for each token
        of the chat-templated, padded prompt, Qwen3's hidden states after TEXT_LAYERS side
        by side. diffusers: `Flux2KleinPipeline._get_qwen3_prompt_embeds` (the padding kept,
        as the transformer attends to it there)."""
        chats = [qwen3_chat_prompt(p, enable_thinking=False) for p in prompts]
        ids, mask = self.tokenizer(chats, max_sequence_length, padding="max_length")
        stacked = concatenate(self.text_encoder.hidden_states_of(ids, mask, self.text_layers),
                              axis=2)
        dtype = self.transformer.x_embedder.weight.dtype
        return stacked if stacked.dtype == dtype else stacked.astype(dtype)

    def guided(self, guidance_scale: float) -> bool:
        """Whether a call at `guidance_scale` runs a negative pass (diffusers'
        `do_classifier_free_guidance`)."""
        return guidance_scale > 1 and not self.distilled

    def embedded_guidance(self, guidance_scale: float, batch: int) -> np.ndarray | None:
        """The transformer's guidance input for `batch` latents: none for klein (FLUX.2
        dev's guidance-distilled model embeds the scale)."""
        return None

    def velocity(self, prompts: Sequence[str], *, height: int, width: int,
                 num_inference_steps: int, guidance_scale: float = 4.0,
                 negative_prompt: str | Sequence[str] = "", max_sequence_length: int = 512,
                 cache: StepCache | None = None, references: Sequence[np.ndarray] = ()
                 ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...], float]:
        """The model as `flow(x, t)` for `prompts` at height x width: x (B, 4C, h, w)
        float32 patchified latents, t the scheduler's timestep (0..1000), the flow the
        scheduler steps along (with diffusers' CFG against `negative_prompt` where
        `guided`); also the latents' shape and the schedule's `mu` (of the image tokens and
        `num_inference_steps`). `cache`: the generation's step cache; the prompts' pass and
        the negative one then run apart, each a branch of it (diffusers' "cond" and "uncond"
        cache contexts), where without a cache they are one batch. `references`: pictures
        (H, W, 3) in [0, 1] the model sees beside the noise (FLUX.2's multi-reference
        editing, `reference_tokens`)."""
        scale = self.vae_scale_factor * 2
        if height < scale or width < scale:
            raise ValueError(f"height and width must be at least {scale}, got {height}x{width}")
        batch = len(prompts)
        guided = self.guided(guidance_scale)
        negatives = ([negative_prompt] * batch if isinstance(negative_prompt, str)
                     else list(negative_prompt))
        text = self.encode_prompt(list(prompts) + (negatives if guided else []),
                                  max_sequence_length)
        h, w = int(height) // scale, int(width) // scale
        txt_ids, img_ids = _positions(text.shape[1], h, w)
        ref_tokens, ref_ids = self.reference_tokens(references)
        if len(ref_ids):
            img_ids = np.concatenate([img_ids, ref_ids])
        rotary = self.transformer.rotary(txt_ids, img_ids)
        dtype, channels = self.transformer.x_embedder.weight.dtype, self.transformer.config[
            "in_channels"]
        device = self.transformer.x_embedder.weight.device
        g = np.float32(guidance_scale)
        embedded = self.embedded_guidance(guidance_scale, batch)
        branches = [] if cache is None else [cache.branch() for _ in range(1 + guided)]
        # replayed unless a step cache (it decides on the host) runs: bound once a generation
        step = self.step_replay.step(self.transformer) if cache is None else None
        guidance = None if embedded is None else asarray(embedded, device=device)

        def apart(packed: np.ndarray, timestep: np.float32) -> np.ndarray:
            # each pass through its own branch: the prompts', then the negative prompts'
            preds = []
            for i, branch in enumerate(branches):
                states = take_slice(text, i * batch, (i + 1) * batch, axis=0)
                out = self.transformer(asarray(packed, dtype=dtype, device=device), states,
                                       np.full(batch, timestep, np.float32), img_ids, txt_ids,
                                       embedded, rotary=rotary, cache=branch)
                preds.append(out.numpy().astype(np.float32))
            return np.concatenate(preds)

        def flow(x: np.ndarray, t: float) -> np.ndarray:
            timestep = np.float32(t) / np.float32(1000)
            packed = x.reshape(len(x), channels, h * w).transpose(0, 2, 1)
            if len(ref_tokens):  # the references' tokens after the noise's, every step
                packed = np.concatenate([packed, np.broadcast_to(
                    ref_tokens, (len(packed), *ref_tokens.shape))], axis=1)
            if step is None:
                pred = apart(packed, timestep)
            else:
                if guided:
                    packed = np.concatenate([packed, packed])
                times = asarray(np.full(len(packed), timestep, np.float32), device=device)
                out = step(asarray(packed, dtype=dtype, device=device), text, times, guidance,
                           rotary)
                pred = out.numpy().astype(np.float32)
            if guided:
                positive, negative = pred[:batch], pred[batch:]
                pred = negative + g * (positive - negative)
            pred = pred[:, :h * w]  # the references' outputs dropped
            return np.ascontiguousarray(pred.transpose(0, 2, 1).reshape(x.shape))

        return flow, (batch, channels, h, w), empirical_mu(h * w, num_inference_steps)

    def reference_tokens(self, pictures: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The reference pictures' packed latents (N, 4C) float32 and their (t, h, w, l) ids
        (N, 4): each picture (H, W, 3) in [0, 1], its sides multiples of 16 (the VAE's 8 and
        the 2x2 patches), encoded to its latent mean, patchified and normalized, its tokens
        at time t = 10, 20, ... in order. diffusers: `Flux2Pipeline.prepare_image_latents`
        and `_prepare_image_ids` (the images already cropped to the multiple)."""
        scale = self.vae_scale_factor * 2
        tokens, ids = [np.zeros((0, self.transformer.config["in_channels"]), np.float32)], [
            np.zeros((0, 4), np.int64)]
        for index, picture in enumerate(pictures):
            height, width = picture.shape[:2]
            if picture.ndim != 3 or height % scale or width % scale or height < scale or (
                    width < scale):
                raise ValueError(f"a FLUX.2 reference picture must be (H, W, 3) with sides "
                                 f"multiples of {scale}, got {picture.shape}; crop or resize it")
            latents = self.mean_latents(
                np.asarray(picture, np.float32).transpose(2, 0, 1)[None] * 2 - 1)[0]
            rows, cols = latents.shape[1:]
            tokens.append(latents.reshape(len(latents), rows * cols).T)
            grid = np.zeros((rows * cols, 4), np.int64)
            grid[:, 0] = 10 + 10 * index
            grid[:, 1], grid[:, 2] = np.divmod(np.arange(rows * cols), cols)
            ids.append(grid)
        return np.concatenate(tokens), np.concatenate(ids)

    def mean_latents(self, pixels: np.ndarray, generator: Any = None) -> np.ndarray:
        """Latents (1, 4C, H/16, W/16) float32 of `pixels` (1, 3, H, W) in [-1, 1] as the
        transformer reads them: the VAE posterior's mean, no draw (`generator`, which
        FlowStart's `encode` passes, unused), patchified and normalized by its batch norm.
        diffusers: Flux2KleinPipeline's and Flux2KleinInpaintPipeline's
        `_encode_vae_image` (`sample_mode="argmax"`)."""
        weight = self.vae.encoder.conv_in.weight
        mean, _ = self.vae.encode(asarray(pixels, dtype=weight.dtype, device=weight.device))
        raw = mean.numpy().astype(np.float32)
        check_encoded(raw, self.vae)
        return self.vae.to_transformer(raw)  # type: ignore[no-any-return]

    def decode(self, latents: np.ndarray, device: Device | None = None,
               run: Callable[[Any, np.ndarray], np.ndarray] | None = None) -> np.ndarray:
        """Pictures (B, H, W, 3) in [0, 1] from the transformer's latents (B, 4C, h, w);
        `run(vae, z)`: the memory mode's decode (MemoryModes.memory_decode)."""
        raw = self.vae.from_transformer(latents)
        weight = self.vae.decoder.conv_in.weight
        with lent_steps(self):  # the VAE takes the step capture's scratch (flow_replay)
            images = run(self.vae, raw) if run is not None else self.vae.decode(asarray(
                raw, dtype=weight.dtype, device=device or weight.device)).numpy().astype(
                np.float32)
        return np.clip(images / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 1)

    def __call__(self, prompt: str | Sequence[str], *, height: int = 1024, width: int = 1024,
                 num_inference_steps: int = 50, guidance_scale: float = 4.0,
                 negative_prompt: str | Sequence[str] = "", seed: int = 0,
                 rng: str = "torch", max_sequence_length: int = 512,
                 latents: np.ndarray | None = None, callback: StepCallback | None = None,
                 output_type: str = "np", cache: StepCache | None = None,
                 image: Sequence[np.ndarray] = (), init_image: Any = None,
                 mask_image: Any = None, strength: float = 1.0) -> np.ndarray:
        """Pictures for `prompt` (one or a list): float images in [0, 1], (B, height, width,
        3) ("np"), or the final latents (B, 4C, H/16, W/16) in the transformer's space
        ("latent"). `guidance_scale`: diffusers' (CFG above 1 against `negative_prompt`,
        unless distilled). `seed` and
        `rng` ("torch", as diffusers; "numpy") draw the starting noise unless `latents` is
        given. `callback(done, total, latents)` after every step (False stops); `cache`:
        step caching (`velocity`); `image`: reference pictures (H, W, 3) in [0, 1]
        (`reference_tokens`). diffusers:
        `Flux2KleinPipeline(prompt, height=, width=, num_inference_steps=, guidance_scale=,
        generator=torch.Generator().manual_seed(seed), output_type="np").images`.
        Inpainting: `init_image` (height x width) the picture inpainted with `mask_image`
        (white = repaint), its latent mean noised to the first sigma `strength` keeps, the
        mask shrunk bilinearly to the latents and the kept part put back after every step;
        `image` the references, the init image the first. diffusers:
        `Flux2KleinInpaintPipeline(image=init_image, image_reference=image[1], mask_image=,
        strength=, ...)` (which reads the init image, then its one `image_reference`)."""
        prompts = check_call(prompt, rng=rng, output_type=output_type, steps=num_inference_steps)
        scale = self.vae_scale_factor * 2
        check_sides(height, width, scale, "FLUX.2")
        # 1. conditioning, as a function of the latents and the timestep
        flow, shape, mu = self.velocity(prompts, height=height, width=width,
                                        num_inference_steps=num_inference_steps,
                                        guidance_scale=guidance_scale,
                                        negative_prompt=negative_prompt,
                                        max_sequence_length=max_sequence_length, cache=cache,
                                        references=image)
        # 2. the schedule: sigmas 1 .. 1/n, shifted by klein's empirical mu
        scheduler = flow_schedule(self.scheduler_config, num_inference_steps, mu)
        # 3. noise (or the picture inpainted, noised), Euler steps along the flow, the
        # pictures out of the latent space
        device = self.transformer.x_embedder.weight.device
        out = run_euler(self.vae, scheduler, shape, flow, generator=make_generator(rng, seed),
                        latents=latents, image=init_image, mask=mask_image, strength=strength,
                        callback=callback, output_type="latent", device=device,
                        encode=self.mean_latents, scale_factor=scale, posterior=False,
                        bilinear_mask=True)
        return out if output_type == "latent" else self.decode(out, device)


def _transformer_step(transformer: Flux2Transformer2DModel, packed: Tensor, text: Tensor,
                      timestep: Tensor, guidance: Tensor | None,
                      rotary: tuple[Tensor, Tensor]) -> Tensor:
    """The transformer's call of a step (StepReplay's captured function): the packed latents
    (the references' tokens after the noise's), the prompts' states, the timesteps and dev's
    guidance (float32 Tensors), the rotary tables of their sizes: all inputs."""
    return transformer(packed, text, timestep, None, None, guidance, rotary=rotary)

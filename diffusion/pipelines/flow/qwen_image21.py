"""Qwen-Image 2.1, as diffusers' QwenImage21Pipeline draws a picture from a prompt: the prompt
in its chat template, Qwen3-VL's last decoder layer's states (before the final norm) of its
tokens, the system turn's dropped, condition the single-stream, block-causal Qwen-Image 2.1
transformer; FlowMatchEulerDiscreteScheduler steps its output from noise over the model
author's sigmas (model_index.json's `sample_sigmas`) or 1 .. 1/n, shifted by the picture's
size; the 64-channel VAE decodes at 16x. True CFG as diffusers': `neg + g * (pos - neg)` for
`true_cfg_scale` g > 1, with no rescale (Qwen-Image 1's per-token norm is gone). With the torch
RNG, a seed gives diffusers' picture (`generator=torch.Generator("cpu").manual_seed(seed)`).

The prompt's tokens are causal and modulated at t = 0, so they never see the picture or the
step: their keys and values are computed once a prompt (`QwenImage21Transformer2DModel.
prefix`, diffusers' `use_kv_cache=True`) and every step runs the picture's tokens alone.

    pipe = QwenImage21Pipeline.from_pretrained("Qwen-Image-2.1")
    images = pipe("a red circle", height=1024, width=1024, num_inference_steps=40, seed=7)
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
from gpustd import Tensor, asarray

from ...loaders.formats.diffusers_folder import component_config
from ...loaders.qwen_image import load_qwenimage21_file, load_qwenimage21_folder
from ...models.llm import LLMTextModel
from ...models.qwen3_vision import Qwen3VLVisionModel
from ...models.qwen21_prompt import encode_read, encode_t2i, read_pictures
from ...models.qwen_image21 import QwenImage21Prefix, QwenImage21Transformer2DModel
from ...models.qwen_image21_vae import AutoencoderKLQwenImage21
from ...models.step_cache import StepCache
from ...noise.rng import make_generator
from ...sampling.model_sampling import calculate_shift
from ...sampling.scheduler_loop import scheduler_loop
from ...text.llm_tokenizer import LLMTokenizer
from ..finite import check_encoded
from .flow_memory import load_network
from .flow_replay import MaskKey, StepReplay, lent_steps, mask_key, mask_of
from .start import FlowStart, StepCallback, check_call, check_sides, flow_schedule

__all__ = ["QwenImage21Pipeline"]

VAE_SCALE = 16  # pixels a latent covers on a side; the transformer reads latents unpatched
# the pixels a condition picture is read at (diffusers: `output_resolution ** 2`)
CONDITION_AREA = 1024 * 1024


def pack(latents: np.ndarray) -> np.ndarray:
    """(B, C, h, w) -> (B, h w, C), row-major: 2.1 reads every latent as a token."""
    batch, channels = latents.shape[:2]
    return latents.reshape(batch, channels, -1).transpose(0, 2, 1)


def unpack(packed: np.ndarray, height: int, width: int) -> np.ndarray:
    """`pack`'s inverse for h x w latents."""
    batch, _, channels = packed.shape
    return packed.transpose(0, 2, 1).reshape(batch, channels, height, width)


def condition_size(width: int, height: int, area: int = CONDITION_AREA) -> tuple[int, int]:
    """(width, height) a condition picture is read at: about `area` pixels at its aspect
    ratio, each side rounded to a multiple of 32. diffusers: pipeline_qwenimage21's
    `calculate_dimensions(output_resolution ** 2, width / height)`."""
    ratio = width / height
    side = math.sqrt(area * ratio)
    return round(side / 32) * 32, round(side / ratio / 32) * 32


def condition_rgba(image: Any, area: int = CONDITION_AREA) -> Any:
    """A condition picture (PIL, or uint8 HxWx3 / HxWx4) resized as QwenImage21Pipeline
    resizes it (RGBA, `condition_size` of `area`, Lanczos: its VaeImageProcessor's `resize`),
    the one picture both the vision tower and the VAE read."""
    from PIL import Image

    picture = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    picture = picture.convert("RGBA")
    width, height = condition_size(*picture.size, area)
    if min(width, height) < VAE_SCALE * 2:
        raise ValueError(f"a Qwen-Image 2.1 condition picture of {picture.size[0]}x"
                         f"{picture.size[1]} is too narrow to read; give one nearer square")
    return picture.resize((width, height), Image.Resampling.LANCZOS)


class QwenImage21Pipeline:
    """Qwen-Image 2.1 on gpustd: pictures from a prompt, or beside condition pictures (its
    editing). Components as diffusers names them; `scheduler_config` is the folder's
    scheduler/scheduler_config.json (a dynamic shift by image size), `sample_sigmas`
    model_index.json's (None: 1 .. 1/n); `vision`: Qwen3-VL's vision tower (None where the
    text encoder's file has none: no condition pictures), `processor_config` the folder's
    processor/preprocessor_config.json."""

    def __init__(self, *, transformer: QwenImage21Transformer2DModel,
                 vae: AutoencoderKLQwenImage21, text_encoder: LLMTextModel,
                 tokenizer: LLMTokenizer, scheduler_config: dict[str, Any],
                 sample_sigmas: Sequence[float] | None = None,
                 vision: Qwen3VLVisionModel | None = None,
                 processor_config: dict[str, Any] | None = None) -> None:
        self.transformer, self.vae = transformer, vae
        self.vision, self.processor_config = vision, processor_config
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.scheduler_config = dict(scheduler_config)
        self.sample_sigmas = None if sample_sigmas is None else tuple(sample_sigmas)
        self.vae_scale_factor = VAE_SCALE
        self.condition_area = CONDITION_AREA
        self.modules: list[str] = []
        # the transformer's step, replayed in the plain memory mode (flow_replay): true CFG's
        # two passes at two sizes (hires)
        self.step_replay = StepReplay(_transformer_step, max_signatures=4)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        transformer_file: str | os.PathLike[str] | None = None,
                        offload: bool = False) -> QwenImage21Pipeline:
        """Load a Qwen-Image 2.1 diffusers folder (`load_qwenimage21_folder`) onto `device`
        in `dtype`; `transformer_file`: a single-file transformer as ComfyUI loads it (bf16,
        fp8, scaled fp8, or a GGUF of one, kept quantized; `load_qwenimage21_file`) in place
        of the folder's, whose config, where it has one, gives what the shapes do not;
        `offload`: each network goes to host memory as soon as it is loaded (the text encoder
        before the transformer loads), for a memory mode to bring in as it runs
        (flow_memory)."""
        skip = ("transformer",) if transformer_file is not None else ()
        weights = load_qwenimage21_folder(path, variant=variant, skip=skip)
        transformer, text_encoder = weights.transformer, weights.text_encoder
        if transformer_file is not None:
            transformer = load_qwenimage21_file(transformer_file,
                                                config=component_config(path, "transformer"))
        assert transformer is not None and text_encoder is not None
        hidden = text_encoder.config["hidden_size"]
        wanted = transformer.config.get("context_in_dim", 4096)
        if wanted != hidden:
            raise ValueError(f"the text encoder's states are {hidden} wide, the transformer "
                             f"reads {wanted}: give the Qwen3-VL text encoder that goes with "
                             "the transformer")
        place = {"dtype": dtype, "device": device or default_device()}
        load = partial(load_network, device=place["device"], offload_to_host=offload)
        # the text encoder first: with `offload` it has left the GPU when the transformer loads
        encoder = load(lambda: LLMTextModel(text_encoder.config, **place), text_encoder)
        tower = weights.vision
        vision = None if tower is None else load(
            lambda: Qwen3VLVisionModel(tower.config, **place), tower)
        return cls(
            # a GGUF's quantized matrices kept as blocks, fused gate/up rows cut from them
            transformer=load(lambda: QwenImage21Transformer2DModel(transformer.config, **place),
                             transformer, slices=True),
            vae=load(lambda: AutoencoderKLQwenImage21(weights.vae.config, **place),
                     weights.vae),
            text_encoder=encoder, tokenizer=LLMTokenizer(weights.tokenizer_dir),
            scheduler_config=weights.scheduler_config, sample_sigmas=weights.sample_sigmas,
            vision=vision, processor_config=weights.processor_config)

    def sigmas(self, steps: int) -> Sequence[float] | None:
        """The author's sigmas where they are `steps` long, else None (1 .. 1/steps): the
        model's default step count is theirs (qwenimage21_defaults), another count samples
        diffusers' evenly spaced grid."""
        if self.sample_sigmas is not None and len(self.sample_sigmas) == steps:
            return self.sample_sigmas
        return None

    def velocity(self, prompts: Sequence[str], *, height: int, width: int,
                 true_cfg_scale: float = 1.0, negative_prompt: str | Sequence[str] = "",
                 cache: StepCache | None = None, references: Sequence[Any] = (),
                 kept: dict[Any, Any] | None = None
                 ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...], float]:
        """The model as `flow(x, t)` for `prompts` at height x width: x (B, C, h, w) float32
        latents, t the scheduler's timestep (0..1000), the model output (true CFG against
        `negative_prompt` when `true_cfg_scale` > 1); also the latents' shape and the
        schedule's `mu`. The prompts' keys and values are computed here, once. `cache`: the
        generation's step cache, of which each pass takes a branch. `references`: condition
        pictures (PIL or uint8 HxWx3 / HxWx4), each read by the vision tower (once, for
        every pass) within the prompt and by the VAE beside it (`prefix`'s condition
        latents), every pass reading them all. `kept`: a dict one generation's calls share
        (a hires pass's, a prompt edit's): pictures read before, by the same bytes, are not
        read again, nor texts encoded before beside them (`_prefixes`)."""
        if height < VAE_SCALE * 2 or width < VAE_SCALE * 2:
            raise ValueError(f"height and width must be at least {VAE_SCALE * 2}, got "
                             f"{height}x{width}")
        batch = len(prompts)
        h, w = height // VAE_SCALE, width // VAE_SCALE
        passes = [list(prompts)]
        if true_cfg_scale > 1:
            passes.append([negative_prompt] * batch if isinstance(negative_prompt, str)
                          else list(negative_prompt))
        transformer = self.transformer
        dtype, device = transformer.dtype, transformer.device
        pictures = [condition_rgba(p, self.condition_area) for p in references]
        prefixes = self._prefixes(passes, pictures, {} if kept is None else kept)
        branches = [None] * len(passes) if cache is None else [cache.branch() for _ in passes]
        # replayed unless a step cache decides on the host: each prefix's keys and values
        # inputs, its padding and layout static arguments
        step = self.step_replay.step(transformer) if cache is None else None

        def predict(tokens: Tensor, timestep: np.ndarray, prefix: Any, branch: Any) -> Any:
            if step is None:
                return transformer(tokens, timestep, h, w, prefix, cache=branch)
            return step(tokens, asarray(timestep, device=device), h, w, tuple(prefix.keys),
                        tuple(prefix.values), mask_key(prefix.keep), prefix.layout)

        def flow(x: np.ndarray, t: float) -> np.ndarray:
            timestep = np.full(len(x), np.float32(t) / np.float32(1000), np.float32)
            tokens = asarray(pack(x), dtype=dtype, device=device)
            preds = [predict(tokens, timestep, prefix, branch).numpy().astype(np.float32)
                     for prefix, branch in zip(prefixes, branches, strict=True)]
            pred = preds[0] if len(preds) == 1 else (
                preds[1] + np.float32(true_cfg_scale) * (preds[0] - preds[1]))
            return unpack(pred, h, w)

        mu = calculate_shift(h * w, self.scheduler_config)
        return flow, (batch, int(self.vae.config["z_dim"]), h, w), mu

    def _prefixes(self, passes: list[list[str]], pictures: list[Any],
                  kept: dict[Any, Any]) -> list[Any]:
        """The transformer's prefix of each pass's texts beside `pictures` (condition_rgba's),
        each made once per `kept`: the pictures' condition latents and the tower's reading by
        their bytes (they ignore the text), a prefix by those bytes and its texts."""
        seen = tuple((p.size, p.tobytes()) for p in pictures)  # what the tower and VAE read
        batch = len(passes[0])

        def once(key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
            if key not in kept:
                kept[key] = make()
            return kept[key]

        conditions, read = {}, None
        if pictures:
            conditions = once(("latents", seen, batch),
                              lambda: self.condition_latents(pictures, batch))
            # the tower reads the pictures once for every pass: their features ignore the text
            read = once(("read", seen), lambda: read_pictures(
                self._vision(), pictures, processor_config=self.processor_config))

        def prefix(texts: list[str]) -> Any:
            made = dict(conditions)  # the kept latents' dict stays as it was
            if read is not None:
                states, mask, made["image_pad_mask"] = encode_read(
                    self.text_encoder, self.tokenizer, texts, read)
            else:
                states, mask, _slots = encode_t2i(self.text_encoder, self.tokenizer, texts)
            return self.transformer.prefix(
                asarray(states, device=self.transformer.device), mask, **made)
        return [once(("prefix", seen, tuple(texts)), partial(prefix, texts)) for texts in passes]

    def _vision(self) -> Qwen3VLVisionModel:
        if self.vision is None:
            raise ValueError("this Qwen-Image 2.1 folder's text encoder has no vision tower "
                             "(model.visual.* tensors): condition pictures need it; give the "
                             "full Qwen3-VL text encoder")
        return self.vision

    def condition_latents(self, pictures: Sequence[Any], batch: int) -> dict[str, Any]:
        """`prefix`'s keywords for condition pictures (condition_rgba's): their latents,
        the VAE's posterior means normalized and packed, one after another, repeated for
        the batch (`condition_latents`), and their latent sizes (`condition_shapes`).
        diffusers: QwenImage21Pipeline.prepare_latents's `image_latents`."""
        packed, shapes = [], []
        for picture in pictures:
            pixels = np.asarray(picture, np.float32).transpose(2, 0, 1)[None] / 127.5 - 1
            packed.append(pack(self.encode_rgba(pixels)))
            shapes.append((picture.size[1] // VAE_SCALE, picture.size[0] // VAE_SCALE))
        latents = np.repeat(np.concatenate(packed, axis=1), batch, axis=0)
        return {"condition_latents": latents, "condition_shapes": shapes}

    def encode_rgba(self, pixels: np.ndarray) -> np.ndarray:
        """Latents (B, 64, h, w) of RGBA `pixels` (B, 4, H, W) in [-1, 1]: the posterior's
        mean, normalized by latents_mean / latents_std (diffusers: QwenImage21Pipeline's
        `_encode_vae_image`, sample_mode="argmax")."""
        vae = self.vae
        mean, _logvar = vae.encode(asarray(pixels, dtype=vae.decoder.conv_in.weight.dtype,
                                           device=vae.device))
        check_encoded(mean.numpy(), vae)
        return vae.normalize(mean).numpy().astype(np.float32)  # type: ignore[no-any-return]

    def encode_image(self, pixels: np.ndarray, generator: Any) -> np.ndarray:
        """Latents (B, 64, h, w) of `pixels` (B, 3, H, W) in [-1, 1], opaque (the VAE reads
        RGBA): the posterior's mean, normalized by latents_mean / latents_std, whatever
        `generator` (diffusers: QwenImage21Pipeline's `_encode_vae_image`,
        sample_mode="argmax")."""
        return self.encode_rgba(np.concatenate([pixels, np.ones_like(pixels[:, :1])], axis=1))

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Images (B, H, W, 3) in [0, 1] from the transformer's latents (B, 64, h, w): the
        VAE's RGB, its alpha channel left out (the pictures are written opaque)."""
        vae = self.vae
        z = vae.denormalize(asarray(latents, dtype=vae.decoder.conv_in.weight.dtype,
                                    device=vae.device))
        with lent_steps(self):  # the VAE takes the step captures' scratch (flow_replay)
            images = vae.decode(z).numpy().astype(np.float32)[:, :3]
        return np.clip(images / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 1)

    def __call__(self, prompt: str | Sequence[str], *, height: int = 1024, width: int = 1024,
                 num_inference_steps: int = 40, true_cfg_scale: float = 1.0,
                 negative_prompt: str | Sequence[str] = "", seed: int = 0, rng: str = "torch",
                 latents: np.ndarray | None = None, image: Sequence[Any] = (),
                 init_image: Any = None, mask_image: Any = None, strength: float = 0.6,
                 callback: StepCallback | None = None, output_type: str = "np",
                 cache: StepCache | None = None) -> np.ndarray:
        """Pictures for `prompt` (one or a list): float images in [0, 1], (B, height, width,
        3) ("np"), or the final latents (B, 64, H/16, W/16) ("latent"). `true_cfg_scale`:
        diffusers' (1 or less: no negative pass). `seed` and `rng` ("torch", as diffusers;
        "numpy") draw the starting noise unless `latents` is given. `callback(done, total,
        latents)` after every step (False stops); `cache`: step caching. `image`: condition
        pictures (PIL or uint8 HxWx3 / HxWx4; `velocity`'s references). diffusers:
        `QwenImage21Pipeline(prompt, image=, negative_prompt=, true_cfg_scale=, height=,
        width=, num_inference_steps=, generator=torch.Generator().manual_seed(seed),
        output_type="np").images`. With `init_image` (PIL or HxWx3 uint8) the run starts from
        that picture at `strength` (and `mask_image`, white = repaint, puts the kept part
        back after every step), as the flow families' img2img and inpainting do."""
        prompts = check_call(prompt, rng=rng, output_type=output_type, steps=num_inference_steps)
        check_sides(height, width, VAE_SCALE * 2, "Qwen-Image 2.1")
        generator = make_generator(rng, seed)
        flow, shape, mu = self.velocity(prompts, height=height, width=width,
                                        true_cfg_scale=true_cfg_scale,
                                        negative_prompt=negative_prompt, cache=cache,
                                        references=image)
        scheduler = flow_schedule(self.scheduler_config, num_inference_steps, mu,
                                  self.sigmas(num_inference_steps))
        start = FlowStart(self.vae, scheduler, shape, generator=generator,
                          latents=latents, image=init_image, mask=mask_image,
                          strength=strength, encode=self.encode_image, scale_factor=VAE_SCALE)
        x = scheduler_loop(start.latents, start.timesteps, scheduler,
                           lambda x, t, i: (flow(x, t), None), dtype=np.float32,
                           after_step=lambda i, x: start.blend(x, i), callback=callback)
        return x if output_type == "latent" else self.decode(x)


def _transformer_step(transformer: QwenImage21Transformer2DModel, tokens: Tensor,
                      timestep: Tensor, rows: int, columns: int, keys: tuple[Tensor, ...],
                      values: tuple[Tensor, ...], keep: MaskKey | None,
                      layout: tuple[Any, ...]) -> Tensor:
    """The transformer's call of a step (StepReplay's captured function): the target's
    tokens, the timesteps (a float32 Tensor) and the prefix's keys and values of every block
    inputs; the grid, the prefix's padding (`mask_key`) and layout static arguments."""
    prefix = QwenImage21Prefix(list(keys), list(values), mask_of(keep), layout)
    return transformer(tokens, timestep, rows, columns, prefix)

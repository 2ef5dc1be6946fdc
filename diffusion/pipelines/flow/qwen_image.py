"""Qwen-Image, as diffusers' QwenImagePipeline draws it: the prompt in Qwen-Image's
describe-the-image template, Qwen2.5-VL's last hidden states of its tokens with the template's
first 34 tokens dropped condition the Qwen-Image transformer; FlowMatchEulerDiscreteScheduler
steps the model output from noise over sigmas 1 .. 1/n, shifted by the picture's size as the
folder's scheduler says; the Qwen-Image VAE decodes. True CFG as diffusers': `neg + g * (pos
- neg)` for `true_cfg_scale` g > 1 (with a negative prompt, "" included), rescaled to the
positive prediction's norm per token. With the torch RNG, a seed gives diffusers' picture
(`generator=torch.Generator("cpu").manual_seed(seed)`). ControlNet units (InstantX's Union)
run as QwenImageControlNetPipeline runs them (flow_control).

    pipe = QwenImagePipeline.from_pretrained("Qwen-Image")
    images = pipe("a red circle", height=1328, width=1328, num_inference_steps=50,
                  true_cfg_scale=4.0, negative_prompt=" ", seed=7)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import Tensor, asarray, take_slice

from ...loaders.flow.text_encoder_file import module_stem
from ...loaders.formats.diffusers_folder import component_config
from ...loaders.qwen_image import (
    language_model_config,
    load_qwenimage_file,
    load_qwenimage_folder,
)
from ...loaders.qwen_image.vae_file import load_qwenimage_vae_file
from ...loaders.vae_kind import require_vae
from ...loaders.z_image import load_llm_file
from ...models.llm import LLMTextModel
from ...models.qwen_image import QwenImageTransformer2DModel
from ...models.qwen_image_vae import AutoencoderKLQwenImage
from ...models.step_cache import StepCache
from ...models.vae import AutoencoderKL
from ...noise.rng import make_generator
from ...sampling.model_sampling import calculate_shift
from ...sampling.scheduler_loop import scheduler_loop
from ...text.llm_tokenizer import LLMTokenizer
from ..finite import check_encoded
from .flow_control import FlowControl
from .flow_memory import load_network
from .flow_replay import MaskKey, StepReplay, lent_steps, mask_key, mask_of
from .start import FlowStart, StepCallback, check_call, check_sides, flow_schedule, single_files
from .vae_file import network_like

__all__ = ["PROMPT_TEMPLATE", "QwenImagePipeline", "QwenVaePasses"]

PROMPT_TEMPLATE = (
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, "
    "quantity, text, spatial relationships of the objects and background:<|im_end|>\n"
    "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n")
TEMPLATE_TOKENS = 34  # the template's leading tokens whose states are dropped
TOKENIZER_MAX_LENGTH = 1024



def pack(latents: np.ndarray) -> np.ndarray:
    """(B, C, h, w) -> (B, h/2 * w/2, 4C): each 2x2 patch's (C, 2, 2) flattened, row-major."""
    batch, channels, height, width = latents.shape
    patches = latents.reshape(batch, channels, height // 2, 2, width // 2, 2)
    return patches.transpose(0, 2, 4, 1, 3, 5).reshape(batch, -1, channels * 4)


def unpack(packed: np.ndarray, height: int, width: int) -> np.ndarray:
    """`pack`'s inverse for h x w latents."""
    batch, _, width4 = packed.shape
    patches = packed.reshape(batch, height // 2, width // 2, width4 // 4, 2, 2)
    return patches.transpose(0, 3, 1, 4, 2, 5).reshape(batch, width4 // 4, height, width)


def true_cfg(positive: np.ndarray, negative: np.ndarray, scale: float) -> np.ndarray:
    """neg + scale * (pos - neg), rescaled per token (last axis) to the norm of pos.
    diffusers: QwenImagePipeline's `comb_pred * (cond_norm / noise_norm)`."""
    combined = negative + np.float32(scale) * (positive - negative)
    ratio = (np.linalg.norm(positive, axis=-1, keepdims=True)
             / np.linalg.norm(combined, axis=-1, keepdims=True))
    return (combined * ratio).astype(np.float32)


class QwenVaePasses:
    """What a pipeline on Qwen-Image's VAE (`vae`, an AutoencoderKLQwenImage) does with it:
    a VAE file in its place, pictures in and out of the latent space (Qwen-Image, Krea 2)."""

    vae: AutoencoderKLQwenImage

    def use_vae_file(self, path: str | os.PathLike[str]) -> None:
        """Decode (and encode) with Qwen-Image's VAE in the file `path`
        (`qwen_image_vae.safetensors`; `load_qwenimage_vae_file`), in the place, dtype and
        config of the folder's. WeightsError in one line for another family's VAE or
        tensors that do not fit."""
        require_vae(path, "causal3d", int(self.vae.config["z_dim"]), model="Qwen-Image",
                    usual="qwen_image_vae.safetensors")
        self.vae = network_like(self.vae, load_qwenimage_vae_file(
            path, config=self.vae.config), path)

    def encode_image(self, pixels: np.ndarray, generator: Any) -> np.ndarray:
        """Latents (B, C, h, w) of `pixels` (B, 3, H, W) in [-1, 1]: a draw from the VAE's
        posterior (one standard normal of the latents' shape from `generator`; its mean
        where `generator` is None), normalized by latents_mean / latents_std. diffusers:
        QwenImageImg2ImgPipeline's `_encode_vae_image`."""
        vae = self.vae
        mean, logvar = vae.encode(asarray(pixels, dtype=vae.decoder.conv_in.weight.dtype,
                                          device=vae.device))
        mean_, logvar_ = (t.numpy().astype(np.float64) for t in (mean, logvar))
        check_encoded(mean_, vae)
        latent = mean_ if generator is None else AutoencoderKL.sample(
            mean_, logvar_, generator.standard_normal(mean_.shape))
        shape = (1, -1, 1, 1)
        center = np.asarray(vae.config["latents_mean"], np.float64).reshape(shape)
        spread = np.asarray(vae.config["latents_std"], np.float64).reshape(shape)
        return ((latent - center) * (1.0 / spread)).astype(np.float32)

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Images (B, H, W, 3) in [0, 1] from the transformer's latents (B, C, h, w)."""
        vae = self.vae
        z = vae.denormalize(asarray(latents, dtype=vae.decoder.conv_in.weight.dtype,
                                    device=vae.device))
        with lent_steps(self):  # the VAE takes the step captures' scratch (flow_replay)
            images = vae.decode(z).numpy().astype(np.float32)
        return np.clip(images / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 1)


class QwenImagePipeline(QwenVaePasses):
    """Qwen-Image txt2img on gpustd. Components as diffusers names them; `scheduler_config`
    is the folder's `scheduler/scheduler_config.json` (a dynamic shift by image size)."""

    def __init__(self, *, transformer: QwenImageTransformer2DModel,
                 vae: AutoencoderKLQwenImage, text_encoder: LLMTextModel,
                 tokenizer: LLMTokenizer, scheduler_config: dict[str, Any],
                 modules: Sequence[str] = ()) -> None:
        self.transformer, self.vae = transformer, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.scheduler_config = dict(scheduler_config)
        self.modules = list(modules)
        self.vae_scale_factor = 2 ** len(vae.config["temperal_downsample"])
        # the transformer's step, replayed in the plain memory mode (flow_replay); four
        # signatures: true CFG's two passes at the first size and at a hires pass's
        self.step_replay = StepReplay(_transformer_step, max_signatures=4)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        transformer_file: str | os.PathLike[str] | None = None,
                        text_encoder_files: Sequence[str | os.PathLike[str]] = (),
                        offload: bool = False) -> QwenImagePipeline:
        """Load a Qwen-Image diffusers folder (`load_qwenimage_folder`) onto `device` in
        `dtype`; `transformer_file`: a single-file transformer (ComfyUI's
        `qwen_image_bf16.safetensors`, an fp8 one, or a GGUF, kept quantized;
        `load_qwenimage_file`) in place of the folder's; `text_encoder_files`: a Qwen2.5-VL
        text encoder file (ComfyUI's `qwen_2.5_vl_7b.safetensors`; `load_llm_file`) in place
        of the folder's text_encoder/, which need then hold no weights; `offload`: each
        network goes to host memory as soon as it is loaded (the text encoder before the
        transformer loads), for a memory mode to bring in as it runs (flow_memory)."""
        files, skip = single_files("Qwen-Image", "its Qwen2.5-VL", transformer_file,
                                   text_encoder_files)
        weights = load_qwenimage_folder(path, variant=variant, skip=skip)
        transformer, text_encoder = weights.transformer, weights.text_encoder
        if transformer_file is not None:
            transformer = load_qwenimage_file(transformer_file,
                                              config=component_config(path, "transformer"))
        if files:
            config = component_config(path, "text_encoder")
            text_encoder = load_llm_file(
                files[0], kind="qwen2_5_vl",
                config=None if config is None else language_model_config(config))
        assert transformer is not None and text_encoder is not None
        hidden = text_encoder.config["hidden_size"]
        wanted = transformer.config.get("joint_attention_dim")
        if wanted is not None and wanted != hidden:
            raise ValueError(f"the text encoder's states are {hidden} wide, the transformer "
                             f"reads {wanted}: Qwen-Image reads Qwen2.5-VL-7B's (3584); give "
                             "the text encoder that goes with the transformer")
        place = {"dtype": dtype, "device": device or default_device()}
        load = partial(load_network, device=place["device"], offload_to_host=offload)
        # the text encoder first: with `offload` it has left the GPU when the transformer loads
        encoder = load(lambda: LLMTextModel(text_encoder.config, **place), text_encoder)
        return cls(
            transformer=load(lambda: QwenImageTransformer2DModel(transformer.config, **place),
                             transformer),
            vae=load(lambda: AutoencoderKLQwenImage(weights.vae.config, **place), weights.vae),
            text_encoder=encoder, tokenizer=LLMTokenizer(weights.tokenizer_dir),
            scheduler_config=weights.scheduler_config,
            modules=[module_stem(f) for f in files])

    def encode_prompt(self, prompts: Sequence[str], max_sequence_length: int = 512
                      ) -> tuple[Tensor, np.ndarray | None]:
        """The prompts' states (B, L, hidden) float32 and their mask (B, L), None when no
        prompt is padded: Qwen2.5-VL's last hidden states of each templated prompt's
        tokens, the first 34 dropped, zero-padded to the longest, cut to
        `max_sequence_length`. diffusers: `QwenImagePipeline.encode_prompt`."""
        if not 1 <= max_sequence_length <= TOKENIZER_MAX_LENGTH:
            raise ValueError(f"max_sequence_length must be 1 .. {TOKENIZER_MAX_LENGTH}, got "
                             f"{max_sequence_length}")
        texts = [PROMPT_TEMPLATE.format(p) for p in prompts]
        ids, mask = self.tokenizer(texts, TOKENIZER_MAX_LENGTH + TEMPLATE_TOKENS,
                                   padding="longest")
        states = self.text_encoder.hidden_states(ids, mask, layer=-1)
        rows = []
        for row, keep in enumerate(mask.astype(bool)):
            kept = np.flatnonzero(keep)
            if len(kept) <= TEMPLATE_TOKENS or kept[-1] - kept[0] + 1 != len(kept):
                raise ValueError("a prompt's tokens must be one run (left or right padding) "
                                 f"longer than the template's first {TEMPLATE_TOKENS}")
            one = take_slice(states, row, row + 1, axis=0)
            rows.append(take_slice(one, int(kept[0]) + TEMPLATE_TOKENS, int(kept[-1]) + 1,
                                   axis=1).numpy()[0])
        length = min(max(len(r) for r in rows), max_sequence_length)
        out = np.zeros((len(rows), length, rows[0].shape[-1]), np.float32)
        keep_mask = np.zeros((len(rows), length), np.int64)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r[:length]
            keep_mask[i, : len(r)] = 1
        device = self.transformer.device
        return asarray(out, device=device), None if keep_mask.all() else keep_mask

    def velocity(self, prompts: Sequence[str], *, height: int, width: int,
                 true_cfg_scale: float = 4.0, negative_prompt: str | Sequence[str] = "",
                 max_sequence_length: int = 512, cache: StepCache | None = None,
                 control: FlowControl | None = None
                 ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...], float]:
        """The model as `flow(x, t)` for `prompts` at height x width: x (B, C, h, w) float32
        latents, t the scheduler's timestep (0..1000), the model output (true CFG against
        `negative_prompt` when `true_cfg_scale` > 1); also the latents' shape and the
        schedule's `mu`. `cache`: the generation's step cache, of which the prompts' pass
        and the negative one take a branch each (diffusers' "cond" and "uncond" contexts).
        `control`: ControlNet units (their maps encoded here at the posterior's mean unless
        `control.encode` drew them), their residuals from the prompts' pass given to both."""
        scale = self.vae_scale_factor * 2
        if height < scale or width < scale:
            raise ValueError(f"height and width must be at least {scale}, got {height}x{width}")
        batch = len(prompts)
        positive = self.encode_prompt(prompts, max_sequence_length)
        guided = true_cfg_scale > 1
        negative = None
        if guided:
            negatives = ([negative_prompt] * batch if isinstance(negative_prompt, str)
                         else list(negative_prompt))
            negative = self.encode_prompt(negatives, max_sequence_length)
        h, w = 2 * (int(height) // scale), 2 * (int(width) // scale)
        dtype, device = self.transformer.dtype, self.transformer.device
        branches = [None, None] if cache is None else [cache.branch() for _ in range(1 + guided)]
        rotary = None
        if control is not None:
            if not control.encoded:
                control.encode(self.vae, batch=batch, width=w * self.vae_scale_factor,
                               height=h * self.vae_scale_factor, generator=None, pack=pack,
                               dtype=dtype, device=device, latents_of=self.encode_image)
            rotary = self.transformer.rotary(h // 2, w // 2, positive[0].shape[1])
        # replayed unless a step cache (it decides on the host) or ControlNets (their
        # residuals a call of their own) take part: bound once a generation
        step = self.replayed_step((positive, negative), (h // 2, w // 2),
                                  eager=cache is not None or control is not None)

        def predict(packed: Tensor, t: np.ndarray, text: tuple[Tensor, Any], i: int,
                    residuals: list[Tensor] | None) -> np.ndarray:
            if step is not None:
                out = step(packed, text[0], asarray(t, device=device), h // 2, w // 2,
                           mask_key(text[1]))
            else:
                out = self.transformer(packed, text[0], t, h // 2, w // 2, text[1],
                                       cache=branches[i], control=residuals)
            return out.numpy().astype(np.float32)

        def flow(x: np.ndarray, t: float) -> np.ndarray:
            timestep = np.full(len(x), np.float32(t) / np.float32(1000), np.float32)
            packed = asarray(pack(x), dtype=dtype, device=device)
            residuals = None if control is None or rotary is None else control.qwen_residuals(
                packed, *positive, timestep, rotary=rotary,
                blocks=len(self.transformer.transformer_blocks))
            pred = predict(packed, timestep, positive, 0, residuals)
            if negative is not None:
                pred = true_cfg(pred, predict(packed, timestep, negative, 1, residuals),
                                true_cfg_scale)
            return unpack(pred, h, w)

        mu = calculate_shift((h // 2) * (w // 2), self.scheduler_config)
        channels = self.transformer.config["in_channels"] // 4
        return flow, (batch, channels, h, w), mu

    def replayed_step(self, texts: Sequence[tuple[Tensor, Any] | None], grid: tuple[int, int],
                      references: Sequence[tuple[int, int]] = (), *, eager: bool = False
                      ) -> Callable[..., Tensor] | None:
        """A generation's `_transformer_step`, replayed (flow_replay), or None where the
        steps run eagerly (`eager`: a step cache decides on the host, ControlNets' residuals
        are a call of their own). The rotary tables of the grid, each prompt's length and the
        `references` are made (and kept) before any recording: constants, not its work."""
        if eager:
            return None
        for text in texts:
            if text is not None:
                self.transformer.rotary(*grid, text[0].shape[1], references)
        return self.step_replay.step(self.transformer)

    def __call__(self, prompt: str | Sequence[str], *, height: int = 1024, width: int = 1024,
                 num_inference_steps: int = 50, true_cfg_scale: float = 4.0,
                 negative_prompt: str | Sequence[str] = "", seed: int = 0, rng: str = "torch",
                 max_sequence_length: int = 512, latents: np.ndarray | None = None,
                 image: Any = None, mask_image: Any = None, strength: float = 0.6,
                 callback: StepCallback | None = None, output_type: str = "np",
                 cache: StepCache | None = None,
                 control: FlowControl | None = None) -> np.ndarray:
        """Pictures for `prompt` (one or a list): float images in [0, 1], (B, height, width,
        3) ("np"), or the final latents (B, 16, H/8, W/8) ("latent"). `true_cfg_scale`:
        diffusers' (1 or less: no negative pass). `seed` and `rng` ("torch", as diffusers;
        "numpy") draw the starting noise unless `latents` is given. `callback(done, total,
        latents)` after every step (False stops); `cache`: step caching (`velocity`);
        `control`: ControlNet units, their maps drawn from the seed's generator before the
        noise, as QwenImageControlNetPipeline(control_image=,
        controlnet_conditioning_scale=, control_guidance_start=, control_guidance_end=)
        draws them. diffusers: `QwenImagePipeline(prompt,
        negative_prompt=, true_cfg_scale=, height=, width=, num_inference_steps=,
        generator=torch.Generator().manual_seed(seed), output_type="np").images`; with
        `image` (PIL or HxWx3 uint8) the run starts from that picture at `strength`, as
        QwenImageImg2ImgPipeline's call with `image=` and `strength=`; with `mask_image` too
        (white = repaint) the kept part is put back after every step, as
        QwenImageInpaintPipeline's call with `mask_image=`."""
        prompts = check_call(prompt, rng=rng, output_type=output_type, steps=num_inference_steps)
        check_sides(height, width, self.vae_scale_factor * 2, "Qwen-Image")
        # 1. the control maps' draws (before the noise's); conditioning, as a function of the
        # latents and the timestep
        generator = make_generator(rng, seed)
        if control is not None:
            control.encode(self.vae, batch=len(prompts) if latents is None else len(latents),
                           width=width, height=height, generator=generator, pack=pack,
                           dtype=self.transformer.dtype, device=self.transformer.device,
                           latents_of=self.encode_image)
        flow, shape, mu = self.velocity(prompts, height=height, width=width,
                                        true_cfg_scale=true_cfg_scale,
                                        negative_prompt=negative_prompt,
                                        max_sequence_length=max_sequence_length, cache=cache,
                                        control=control)
        # 2. the schedule: sigmas 1 .. 1/n, shifted by the picture's size
        scheduler = flow_schedule(self.scheduler_config, num_inference_steps, mu)
        # 3. the start: noise (diffusers draws (B, 1, C, h, w): the same numbers), or the
        # init image noised to the first kept sigma; Euler steps along the flow, the
        # pictures out of the latent space
        start = FlowStart(self.vae, scheduler, shape, generator=generator,
                          latents=latents, image=image, mask=mask_image, strength=strength,
                          encode=self.encode_image, scale_factor=self.vae_scale_factor)
        x = scheduler_loop(start.latents, start.timesteps, scheduler,
                           lambda x, t, i: (flow(x, t), None), dtype=np.float32,
                           after_step=lambda i, x: start.blend(x, i), callback=callback)
        return x if output_type == "latent" else self.decode(x)


def _transformer_step(transformer: QwenImageTransformer2DModel, packed: Tensor, states: Tensor,
                      timestep: Tensor, rows: int, columns: int, mask: MaskKey | None,
                      references: tuple[tuple[int, int], ...] = (),
                      rgb: tuple[int, ...] | None = None) -> Tensor:
    """The transformer's call of a step (StepReplay's captured function): the packed latents
    (an edit's reference tokens after the noise's), the prompt's states and the timesteps (a
    float32 Tensor) inputs; the patch grid, the prompt's mask, read on the host (`mask_key`),
    the references' grids and Qwen-Image-Layered's RGB flags static arguments."""
    return transformer(packed, states, timestep, rows, columns, mask_of(mask),
                       references=references,
                       additional_t_cond=None if rgb is None else np.asarray(rgb, np.int64))

"""ERNIE-Image, as diffusers' ErnieImagePipeline draws it: the prompt tokenized as it is (no
chat template, <s> first, no padding), the Mistral3 text encoder's second-to-last hidden
states (`hidden_states[-2]`) condition the ERNIE-Image transformer, which predicts the flow
of FLUX.2's patchified 128-channel latents; classifier-free guidance `neg + g * (pos - neg)`
against the negative prompt ("" when none) for guidance_scale g > 1;
FlowMatchEulerDiscreteScheduler over sigmas 1 .. 1/n with the folder's fixed shift; the
VAE's batch norm (eps 1e-5, the value diffusers' pipeline fixes) maps the latents back before
FLUX.2's VAE decodes. With the torch RNG a seed gives diffusers' picture. Each prompt and
negative prompt runs as its own pass (diffusers pads a batch and masks the padding: the same
result). The prompt enhancer (`use_pe`, a Ministral 3 rewriting the prompt) is not run:
pass `use_pe=False` to diffusers for the same picture.

    pipe = ErnieImagePipeline.from_pretrained("ERNIE-Image")
    images = pipe("a red circle", height=1024, width=1024, guidance_scale=4.0, seed=7)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import Tensor, asarray

from ...loaders.ernie_image import load_ernie_image_file, load_ernie_image_folder
from ...loaders.flux2.vae_file import load_flux2_vae_file
from ...loaders.formats.diffusers_folder import component_config
from ...loaders.vae_kind import require_vae
from ...models.ernie_image import ErnieImageTransformer2DModel
from ...models.llm import LLMTextModel
from ...models.step_cache import StepCache
from ...models.vae_flux2 import AutoencoderKLFlux2
from ...noise.rng import make_generator
from ...text.llm_tokenizer import LLMTokenizer
from .flow_memory import load_network
from .flow_replay import StepReplay, lent_steps
from .prompt_passes import prompt_passes
from .start import StepCallback, check_call, check_sides, encode_image, flow_schedule, run_euler
from .vae_file import network_like

__all__ = ["BATCH_NORM_EPS", "ErnieImagePipeline"]

# the VAE batch norm's eps ErnieImagePipeline decodes with, whatever vae/config.json says
# (its comment: the trained value; the released config says 1e-4)
BATCH_NORM_EPS = 1e-5


class ErnieImagePipeline:
    """ERNIE-Image txt2img (and img2img, inpainting) on gpustd. Components as diffusers names
    them; `scheduler_config` is the folder's `scheduler/scheduler_config.json`,
    `tokenizer_config` its tokenizer/tokenizer_config.json (the BOS and the length prompts
    are cut to)."""

    def __init__(self, *, transformer: ErnieImageTransformer2DModel, vae: AutoencoderKLFlux2,
                 text_encoder: LLMTextModel, tokenizer: LLMTokenizer,
                 scheduler_config: dict[str, Any],
                 tokenizer_config: dict[str, Any] | None = None) -> None:
        self.transformer, self.vae = transformer, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.scheduler_config = dict(scheduler_config)
        self.modules: list[str] = []
        self.vae_scale_factor = 2 ** (len(vae.config["block_out_channels"]) - 1)
        # the transformer's step, replayed in the plain memory mode (flow_replay); a
        # signature per caption length: CFG's two passes at two sizes (hires)
        self.step_replay = StepReplay(_transformer_step, max_signatures=4)
        config = tokenizer_config or {}
        bos = config.get("bos_token")
        bos = bos.get("content") if isinstance(bos, dict) else bos
        found = tokenizer.tokenizer.token_to_id(bos) if bos else None
        self.bos_id = 0 if found is None else int(found)  # an empty prompt's one token
        self.max_length = int(min(config.get("model_max_length") or 2**31, 2**31))

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: Any = np.float32,
                        device: Device | None = None, variant: str | None = None,
                        transformer_file: str | os.PathLike[str] | None = None,
                        offload: bool = False) -> ErnieImagePipeline:
        """Load an ERNIE-Image diffusers folder (`load_ernie_image_folder`) onto `device` in
        `dtype`; `transformer_file`: a single-file transformer (ComfyUI's, or a GGUF, kept
        quantized; `load_ernie_image_file`) in place of the folder's; `offload`: each network
        goes to host memory as soon as it is loaded (the text encoder before the transformer
        loads), for a memory mode to bring in as it runs (flow_memory)."""
        skip = ("transformer",) if transformer_file is not None else ()
        weights = load_ernie_image_folder(path, variant=variant, skip=skip)
        transformer, text_encoder = weights.transformer, weights.text_encoder
        if transformer_file is not None:
            transformer = load_ernie_image_file(
                transformer_file, config=component_config(path, "transformer"))
        assert transformer is not None and text_encoder is not None
        hidden = text_encoder.config["hidden_size"]
        wanted = transformer.config.get("text_in_dim", 2560)
        if wanted != hidden:
            raise ValueError(f"the text encoder's states are {hidden} wide, the transformer "
                             f"reads {wanted}: give the folder's own text encoder")
        place = {"dtype": dtype, "device": device or default_device()}
        # a GGUF's quantized matrices kept as blocks
        load = partial(load_network, device=place["device"], offload_to_host=offload,
                       slices=True)
        # the text encoder first: with `offload` it has left the GPU when the transformer loads
        encoder = load(lambda: LLMTextModel(text_encoder.config, **place), text_encoder)
        vae_config = {**weights.vae.config, "batch_norm_eps": BATCH_NORM_EPS}
        return cls(
            transformer=load(lambda: ErnieImageTransformer2DModel(transformer.config, **place),
                             transformer),
            vae=load(lambda: AutoencoderKLFlux2(vae_config, **place), weights.vae),
            text_encoder=encoder, tokenizer=LLMTokenizer(weights.tokenizer_dir),
            scheduler_config=weights.scheduler_config,
            tokenizer_config=weights.tokenizer_config)

    def use_vae_file(self, path: str | os.PathLike[str]) -> None:
        """Decode (and encode) with FLUX.2's VAE in the file `path` (`flux2-vae.safetensors`),
        in the place, dtype and config of the folder's (its batch norm's eps ERNIE's).
        WeightsError in one line for another family's VAE."""
        require_vae(path, "flux2", int(self.vae.config["latent_channels"]),
                    model="ERNIE-Image", usual="flux2-vae.safetensors")
        self.vae = network_like(self.vae, load_flux2_vae_file(path, config=self.vae.config),
                                path)

    def encode_prompt(self, prompt: str) -> Tensor:
        """One prompt's states (1, T, hidden) in the transformer's dtype: the text encoder's
        second-to-last hidden states of its tokens (<s> first, cut at the tokenizer's
        model_max_length; an empty one the BOS alone). diffusers:
        `ErnieImagePipeline.encode_prompt`."""
        ids, _ = self.tokenizer([prompt], self.max_length, padding="longest")
        if ids.shape[1] == 0:
            ids = np.array([[self.bos_id]], np.int64)
        states = self.text_encoder.hidden_states(ids, None, layer=-2)
        dtype = self.transformer.x_embedder.proj.weight.dtype
        return states if states.dtype == dtype else states.astype(dtype)

    def velocity(self, prompts: Sequence[str], *, height: int, width: int,
                 guidance_scale: float = 4.0, negative_prompt: str | Sequence[str] = "",
                 cache: StepCache | None = None
                 ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...], None]:
        """The guided transformer as `flow(x, t)` for `prompts` at height x width: x (B, C,
        h, w) float32 latents in the transformer's space, t the scheduler's timestep (0..1000,
        what the transformer reads), the flow back float32; a negative pass where
        guidance_scale > 1. Also the latents' shape and the schedule's mu (None: the config's
        shift is fixed). `cache`: the generation's step cache, of which each picture's prompt
        pass and negative pass take a branch (diffusers' separate calls)."""
        scale = self.vae_scale_factor * 2
        if height < scale or width < scale:
            raise ValueError(f"height and width must be at least {scale}, got {height}x{width}")
        batch, guided = len(prompts), guidance_scale > 1
        passes = prompt_passes(self.encode_prompt, prompts, negative_prompt, guided, cache)
        weight = self.transformer.x_embedder.proj.weight
        g = np.float32(guidance_scale)

        # replayed unless a step cache decides on the host; the rotary tables of each text
        # length made (and kept) before any recording: constants, not its work
        step = self.step_replay.step(self.transformer) if cache is None else None
        for text in (*passes.texts, *passes.negatives) if step is not None else ():
            self.transformer.rotary(text.shape[1], height // scale, width // scale)

        def predict(latent: Tensor, t: np.float32, text: Tensor, branch: Any) -> np.ndarray:
            if step is not None:
                out = step(latent, text, asarray(np.full(1, t, np.float32), device=latent.device))
            else:
                out = self.transformer(latent, text, [t], cache=branch)
            return out.numpy().astype(np.float32)[0]

        def flow(x: np.ndarray, t: float) -> np.ndarray:
            out, timestep = np.empty_like(x, dtype=np.float32), np.float32(t)
            for i in range(len(x)):
                latent = asarray(x[i:i + 1], dtype=weight.dtype, device=weight.device)
                k = i % batch  # picture i's prompt (several pictures a prompt: in turn)
                out[i] = predict(latent, timestep, passes.texts[k], passes.branches[k][0])
                if guided:
                    negative = predict(latent, timestep, passes.negatives[k],
                                       passes.branches[k][1])
                    out[i] = negative + g * (out[i] - negative)
            return out

        h, w = int(height) // scale, int(width) // scale
        return flow, (batch, self.transformer.config["in_channels"], h, w), None

    def drawn_latents(self, pixels: np.ndarray, generator: Any) -> np.ndarray:
        """Latents (1, 4C, H/16, W/16) float32 of `pixels` (1, 3, H, W) in [-1, 1] in the
        transformer's space, as img2img starts: a draw from the VAE's posterior
        (`encode_image`, one standard normal from `generator`), patchified and normalized by
        its batch norm."""
        return self.vae.to_transformer(  # type: ignore[no-any-return]
            encode_image(self.vae, pixels, generator))

    def decode(self, latents: np.ndarray, device: Device | None = None,
               run: Callable[[Any, np.ndarray], np.ndarray] | None = None) -> np.ndarray:
        """Pictures (B, H, W, 3) in [0, 1] from the transformer's latents (B, 4C, h, w): the
        batch norm undone, unpatchified, decoded; `run(vae, z)`: the memory mode's decode."""
        raw = self.vae.from_transformer(latents)
        weight = self.vae.decoder.conv_in.weight
        images = run(self.vae, raw) if run is not None else self.vae.decode(asarray(
            raw, dtype=weight.dtype, device=device or weight.device)).numpy().astype(np.float32)
        return np.clip(images / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 1)

    def __call__(self, prompt: str | Sequence[str], *, negative_prompt: str | Sequence[str] = "",
                 height: int = 1024, width: int = 1024, num_inference_steps: int = 50,
                 guidance_scale: float = 4.0, seed: int = 0, rng: str = "torch",
                 latents: np.ndarray | None = None, image: Any = None, mask_image: Any = None,
                 strength: float = 0.6, callback: StepCallback | None = None,
                 output_type: str = "np", cache: StepCache | None = None,
                 use_pe: bool = False) -> np.ndarray:
        """Pictures for `prompt` (one or a list): float images in [0, 1], (B, height, width,
        3) ("np"), or the final latents (B, 4C, H/16, W/16) ("latent"). Guidance as
        `velocity`. `seed` and `rng` ("torch", as diffusers; "numpy") draw the starting
        noise unless `latents` is given; `image` (PIL or HxWx3 uint8; with `mask_image`,
        white = repaint) starts from that picture at `strength`, as FLUX's img2img and
        inpainting do (diffusers has no ERNIE-Image img2img); `callback(done, total,
        latents)` after every step (False stops); `cache`: step caching (`velocity`).
        `use_pe=True` is refused (the prompt
        enhancer is not run). diffusers: `ErnieImagePipeline(prompt, negative_prompt=,
        height=, width=, num_inference_steps=, guidance_scale=, use_pe=False,
        generator=torch.Generator().manual_seed(seed), output_type="np").images`."""
        if use_pe:
            raise ValueError("ERNIE-Image's prompt enhancer (use_pe) is not run here: write the "
                             "longer prompt yourself, or leave use_pe off")
        prompts = check_call(prompt, rng=rng, output_type=output_type, steps=num_inference_steps)
        scale = self.vae_scale_factor * 2
        check_sides(height, width, scale, "ERNIE-Image")
        # 1. conditioning, as a function of the latents and the timestep
        flow, shape, mu = self.velocity(prompts, height=height, width=width,
                                        guidance_scale=guidance_scale,
                                        negative_prompt=negative_prompt, cache=cache)
        # 2. the schedule: sigmas 1 .. 1/n, the config's fixed shift
        scheduler = flow_schedule(self.scheduler_config, num_inference_steps, mu)
        # 3. noise (or the picture, noised), Euler steps along the flow, the pictures
        device = self.transformer.x_embedder.proj.weight.device
        out = run_euler(self.vae, scheduler, shape, flow, generator=make_generator(rng, seed),
                        latents=latents, image=image, mask=mask_image, strength=strength,
                        callback=callback, output_type="latent", device=device,
                        encode=self.drawn_latents, scale_factor=scale)
        if output_type == "latent":
            return out
        with lent_steps(self):  # the VAE takes the step capture's scratch (flow_replay)
            return self.decode(out, device)


def _transformer_step(transformer: ErnieImageTransformer2DModel, latent: Tensor, text: Tensor,
                      timestep: Tensor) -> Tensor:
    """The transformer's call of a step (StepReplay's captured function): the latents, the
    prompt's states and the timestep (a float32 Tensor on the 0..1000 scale), all inputs; the
    rotary tables of the sizes are kept constants."""
    return transformer(latent, text, timestep)

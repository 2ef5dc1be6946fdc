"""Whole pictures with the transformer's steps eager and replayed (issue 44): the wall time
of a picture at 1024x1024, the VAE decode included, once with every step run op by op
(`eager`: what a memory mode runs) and once replayed from the pipeline's kept capture
(`replay`: the plain mode's, diffusion.pipelines.flow.flow_replay). BENCH_MODELS picks,
comma-separated:

- sana (the default): Sana 1600M, SanaPipeline's 20 steps of its DPM-Solver++ on flow sigmas,
  CFG 4.5 with an empty negative prompt (one batch of 2), the DC-AE;
- zimage: Z-Image Turbo, ZImagePipeline's 8 Euler steps without CFG, FLUX's VAE;
- pixart: PixArt-Σ XL 1024, PixArtSigmaPipeline's 20 DPM-Solver++ steps at CFG 4.5 (one
  batch of 2, T5's 300 places each, the prompt's 62 real), the SD VAE;
- cosmos2: Cosmos Predict2 2B Text2Image, Cosmos2TextToImagePipeline's 35 EDM Euler steps with
  CFG 7 (one batch of 2, T5's 512 places each), the steps alone (the latents: random weights'
  leave the VAE's range, whose decode then gives NaN);
- auraflow: AuraFlow v0.3, AuraFlowPipeline's 50 Euler steps with CFG 3.5 (a pass each for the
  prompt and the negative, UMT5's 256 places each), the steps alone as cosmos2's;
- ideogram4: Ideogram 4, Ideogram4Pipeline's 48 Euler steps at guidance 7 (its two 9B
  transformers, a recording each; 64 prompt tokens), the steps alone.

Random weights at the real configs (SANA_1600M and the f32c32 DC-AE's; bench/zimage.py's
ZIMAGE_TURBO and FLUX's VAE; bench/_dit_models.py's COSMOS2 and Wan 2.1's VAE, its AURAFLOW and
FLUX's VAE at 4 latent channels: SDXL's shape; IDEOGRAM4 twice, FLUX's VAE at 32 channels),
filled in place on the device; the text
encoders are left out: the prompt's states are random (Sana: 62 real tokens, as
bench/_dit_sana.py's prompt, the negative prompt's 1; Z-Image: 64 tokens; Cosmos: 512 places;
AuraFlow: 64 real of 256 places, the rest zeros as the pipeline zeroes them), so the
seconds are the steps and the decode. Seconds: the median of 3 pictures after a warm-up
one; step_s: the mean time between step callbacks (each follows the latents' read-back), the
first step left out; peak_gib: the device's peak allocation over the timed pictures (the
decode borrows the step capture's scratch: no second set of activations); vs_eager: eager
seconds / these. float32 and float16 where the device has it (BENCH_DTYPES picks).
`--quick`: tiny transformers and VAEs at 64x64, 4 steps (a smoke run on any adapter).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import gpucore

from . import _harness
from ._dit_models import SANA_1600M

COLUMNS = ["model", "mode", "dtype", "size", "steps", "seconds", "step_s", "peak_gib",
           "recordings", "vs_eager"]
# a tiny transformer over bench/dc_ae.py's tiny DC-AE (8 latent channels, 4x)
TINY_SANA: dict[str, Any] = dict(
    in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=8, num_layers=2,
    num_cross_attention_heads=2, cross_attention_head_dim=8, cross_attention_dim=16,
    caption_channels=24, mlp_ratio=2.5, sample_size=16, patch_size=1)
SCHEDULER: dict[str, Any] = dict(  # Sana_1600M_1024px_diffusers' scheduler_config.json
    algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
    prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0,
    final_sigmas_type="zero", lower_order_final=True, timestep_spacing="linspace",
    beta_schedule="linear", beta_start=0.0001, beta_end=0.02, num_train_timesteps=1000)


def run(quick: bool = False) -> dict[str, Any]:
    device = gpucore.default_device()
    size, repeat = (64, 1) if quick else (1024, 3)
    rows = []
    for name in os.environ.get("BENCH_MODELS", "sana").split(","):
        build, settings = MODELS[name]
        if quick:
            settings = {**settings, "num_inference_steps": 4}
        for dtype in _harness.dtypes(device):
            pipe = build(quick, dtype, device)
            dtype_rows = [_time(pipe, mode, size, settings, repeat, device)
                          for mode in ("eager", "replay")]
            for row in dtype_rows:
                row.update(model=name, dtype=np.dtype(dtype).name,
                           vs_eager=dtype_rows[0]["seconds"] / row["seconds"])
            rows += dtype_rows
            del pipe
            device.empty_pool()
    return {"benchmark": "flow_replay", "environment": _harness.environment(device),
            "notes": "Whole pictures (random weights, random prompt states: the text encoders "
                     "not run), the transformer's steps eager or replayed from the pipeline's "
                     "kept capture; see bench/flow_replay.py",
            "columns": COLUMNS, "rows": rows}


def _sana(quick: bool, dtype: Any, device: gpucore.Device) -> Any:
    """A SanaPipeline of random weights whose prompt states are random (no Gemma 2)."""
    from diffusion.loaders.sana import DC_AE_SANA_CONFIG
    from diffusion.models.dc_ae import AutoencoderDC
    from diffusion.models.sana import SanaTransformer2DModel
    from diffusion.pipelines.flow.sana import SanaPipeline

    from .dc_ae import TINY

    config = TINY_SANA if quick else SANA_1600M
    vae_config = TINY if quick else {k: v for k, v in DC_AE_SANA_CONFIG.items()
                                     if not k.startswith("_")}
    place = {"dtype": dtype, "device": device}
    transformer = _random(SanaTransformer2DModel(config, **place), 0)
    vae = _random(AutoencoderDC(vae_config, **place), 1)
    pipe = SanaPipeline(transformer=transformer, vae=vae, text_encoder=None,  # type: ignore
                        tokenizer=None, scheduler_config=SCHEDULER)  # type: ignore[arg-type]
    width = int(config["caption_channels"])
    rng = np.random.default_rng(2)
    prompt = rng.standard_normal((1, 9 if quick else 62, width)).astype(np.float32)
    negative = rng.standard_normal((1, 1, width)).astype(np.float32)

    def prompt_states(prompts: Any, *, max_sequence_length: int = 300,
                      instruction: Any = None) -> tuple[np.ndarray, np.ndarray]:
        states = prompt if instruction is None else negative  # the negative: instruction=()
        return states, np.ones(states.shape[:2], np.int64)

    pipe.prompt_states = prompt_states  # type: ignore[method-assign]
    return pipe


def _zimage(quick: bool, dtype: Any, device: gpucore.Device) -> Any:
    """A ZImagePipeline of random weights whose captions are random (no Qwen3)."""
    from diffusion.models import AutoencoderKL
    from diffusion.models.z_image import ZImageTransformer2DModel
    from diffusion.pipelines.flow.z_image import ZImagePipeline
    from gpustd import Tensor

    from ._lowvram_flow import FLUX_VAE, TINY
    from .zimage import TINY_ZIMAGE, ZIMAGE_TURBO

    config = dict(TINY_ZIMAGE, in_channels=4) if quick else ZIMAGE_TURBO
    place = {"dtype": dtype, "device": device}
    pipe = ZImagePipeline(
        transformer=_random(ZImageTransformer2DModel(config, **place), 0),
        vae=_random(AutoencoderKL(TINY["flux_vae"] if quick else FLUX_VAE, **place), 1),
        text_encoder=None, tokenizer=None,  # type: ignore[arg-type]
        scheduler_config={"num_train_timesteps": 1000, "shift": 3.0})
    states = np.random.default_rng(2).standard_normal((64, config["cap_feat_dim"]))
    caption = Tensor.from_numpy(states.astype(np.float32), device=device)
    pipe.encode_prompt = lambda prompts, *_: [caption] * len(prompts)  # type: ignore
    return pipe


def _pixart(quick: bool, dtype: Any, device: gpucore.Device) -> Any:
    """A PixArtPipeline (Σ 1024) of random weights whose T5 states are random (no T5): the
    prompt's 62 real tokens of 300, the empty negative prompt's 1."""
    from diffusion.models import AutoencoderKL
    from diffusion.models.pixart import PixArtTransformer2DModel
    from diffusion.pipelines.flow.pixart import PixArtPipeline

    from ._dit_models import PIXART_SIGMA, TINY
    from .vae import SD_VAE, TINY_VAE

    config = TINY["pixart"] if quick else PIXART_SIGMA
    place = {"dtype": dtype, "device": device}
    pipe = PixArtPipeline(
        transformer=_random(PixArtTransformer2DModel(config, **place), 0),
        vae=_random(AutoencoderKL(TINY_VAE if quick else SD_VAE, **place), 1),
        text_encoder=None, tokenizer=None,  # type: ignore[arg-type]
        scheduler_config={"_class_name": "DPMSolverMultistepScheduler",
                          "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02})
    states = np.random.default_rng(2).standard_normal((1, 300, config["caption_channels"]))

    def encode_prompt(prompts: Any, max_sequence_length: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
        mask = (np.arange(300) < (62 if prompts[0] else 1)).astype(np.int64)[None]
        return (np.repeat(states.astype(np.float32), len(prompts), 0),
                np.repeat(mask, len(prompts), 0))

    pipe.encode_prompt = encode_prompt  # type: ignore[method-assign]
    return pipe


def _cosmos2(quick: bool, dtype: Any, device: gpucore.Device) -> Any:
    """A Cosmos2TextToImagePipeline of random weights whose T5 states are random (no T5)."""
    from diffusion.models.cosmos import CosmosTransformer3DModel
    from diffusion.models.wan_vae import AutoencoderKLWan
    from diffusion.pipelines.flow.cosmos import Cosmos2TextToImagePipeline

    from ._dit_models import COSMOS2, TINY
    from .wan import TINY as TINY_WAN
    from .wan import VAE21

    config = dict(TINY["cosmos2"], in_channels=4, out_channels=4) if quick else COSMOS2
    vae_config = TINY_WAN["wan21_1_3b"][1] if quick else dict(
        VAE21, latents_mean=[0.0] * 16, latents_std=[1.0] * 16)
    place = {"dtype": dtype, "device": device}
    pipe = Cosmos2TextToImagePipeline(
        transformer=_random(CosmosTransformer3DModel(config, **place), 0),
        vae=_random(AutoencoderKLWan(vae_config, **place), 1),  # (not run: the steps alone)
        text_encoder=None, tokenizer=None,  # type: ignore[arg-type]
        scheduler_config={"use_karras_sigmas": True})
    states = np.random.default_rng(2).standard_normal((1, 512, config["text_embed_dim"]))

    def encode_prompt(prompts: Any, max_sequence_length: int = 512) -> np.ndarray:
        return np.repeat(states.astype(np.float32), len(prompts), 0)

    pipe.encode_prompt = encode_prompt  # type: ignore[method-assign]
    return pipe


def _auraflow(quick: bool, dtype: Any, device: gpucore.Device) -> Any:
    """An AuraFlowPipeline of random weights whose UMT5 states are random (no UMT5)."""
    from diffusion.models import AutoencoderKL
    from diffusion.models.auraflow import AuraFlowTransformer2DModel
    from diffusion.pipelines.flow.auraflow import AuraFlowPipeline
    from gpustd import asarray

    from ._dit_models import AURAFLOW, TINY
    from ._lowvram_flow import FLUX_VAE
    from ._lowvram_flow import TINY as TINY_VAES

    # quick: a position table of 16 x 16 patches (the tiny VAE's 32 x 32 latents at 64 px)
    config = dict(TINY["auraflow"], pos_embed_max_size=256) if quick else AURAFLOW
    vae_config = TINY_VAES["flux_vae"] if quick else dict(FLUX_VAE, latent_channels=4)
    place = {"dtype": dtype, "device": device}
    pipe = AuraFlowPipeline(
        transformer=_random(AuraFlowTransformer2DModel(config, **place), 0),
        vae=_random(AutoencoderKL(vae_config, **place), 1),  # (not run: the steps alone)
        text_encoder=None, tokenizer=None,  # type: ignore[arg-type]
        scheduler_config={"num_train_timesteps": 1000, "shift": 1.73})
    states = np.random.default_rng(2).standard_normal((1, 256, config["joint_attention_dim"]))
    states[:, 64:] = 0

    def encode_prompt(prompts: Any) -> Any:
        return asarray(np.repeat(states, len(prompts), 0), dtype=dtype, device=device)

    pipe.encode_prompt = encode_prompt  # type: ignore[method-assign]
    return pipe


def _ideogram4(quick: bool, dtype: Any, device: gpucore.Device) -> Any:
    """An Ideogram4Pipeline of random weights (both transformers) whose prompt features are
    random (no Qwen3-VL)."""
    from diffusion.models.ideogram4 import Ideogram4Transformer2DModel
    from diffusion.models.vae_flux2 import AutoencoderKLFlux2
    from diffusion.pipelines.flow.ideogram4 import Ideogram4Pipeline
    from gpustd import asarray

    from ._dit_models import IDEOGRAM4, TINY
    from ._lowvram_flow import FLUX_VAE
    from ._lowvram_flow import TINY as TINY_VAES

    config = TINY["ideogram4"] if quick else IDEOGRAM4
    vae_config = dict(TINY_VAES["flux_vae"] if quick else FLUX_VAE, latent_channels=32)
    place = {"dtype": dtype, "device": device}
    pipe = Ideogram4Pipeline(
        transformer=_random(Ideogram4Transformer2DModel(config, **place), 0),
        unconditional_transformer=_random(Ideogram4Transformer2DModel(config, **place), 1),
        vae=_random(AutoencoderKLFlux2(vae_config, **place), 2),  # (not run: the steps alone)
        text_encoder=None, tokenizer=None,  # type: ignore[arg-type]
        scheduler_config={"num_train_timesteps": 1000})
    features = np.random.default_rng(3).standard_normal((1, 64, config["llm_features_dim"]))
    states = asarray(features.astype(np.float32), device=device)
    pipe.encode_prompt = lambda prompt: states  # type: ignore[method-assign]
    return pipe


MODELS: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {
    "sana": (_sana, {"num_inference_steps": 20, "guidance_scale": 4.5}),
    "zimage": (_zimage, {"num_inference_steps": 8, "guidance_scale": 0.0}),
    "pixart": (_pixart, {"num_inference_steps": 20, "guidance_scale": 4.5,
                         "use_resolution_binning": False}),
    # the steps alone: random weights' latents leave any VAE's range by the last step
    "cosmos2": (_cosmos2, {"num_inference_steps": 35, "guidance_scale": 7.0,
                           "output_type": "latent"}),
    "auraflow": (_auraflow, {"num_inference_steps": 50, "guidance_scale": 3.5,
                             "output_type": "latent"}),
    "ideogram4": (_ideogram4, {"num_inference_steps": 48, "guidance_scale": 7.0,
                               "output_type": "latent"}),
}


def _random(model: Any, seed: int) -> Any:
    """`model` with every parameter set to normal(0, 0.02) draws (norm scales 1 + those),
    tiled from one block of draws: the values do not change the time."""
    block = np.random.default_rng(seed).standard_normal(1 << 20).astype(np.float32) * 0.02
    for name, param in model.named_parameters():
        values = np.resize(block, param.shape) + (1.0 if "norm" in name else 0.0)
        param.buffer.write(np.ascontiguousarray(values, dtype=param.dtype))
    return model


def _time(pipe: Any, mode: str, size: int, settings: dict[str, Any], repeat: int,
          device: gpucore.Device) -> dict[str, Any]:
    """One mode's row: a warm-up picture (the recording), then `repeat` timed ones."""
    from diffusion.pipelines.flow.flow_replay import step_replays

    for replay in step_replays(pipe):  # Ideogram 4 keeps one a transformer
        replay.use_eager(mode == "eager")
    stamps: list[float] = []

    def picture() -> None:
        stamps.clear()
        pipe("a prompt", height=size, width=size, seed=0, rng="numpy", **settings,
             callback=lambda *_: stamps.append(time.perf_counter()))

    picture()
    device.synchronize()
    device.reset_peak_memory()
    seconds, step_s = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        picture()
        device.synchronize()
        seconds.append(time.perf_counter() - start)
        step_s.append((stamps[-1] - stamps[0]) / max(1, len(stamps) - 1))
    return {"mode": mode, "size": f"{size}x{size}", "steps": settings["num_inference_steps"],
            "seconds": statistics.median(seconds), "step_s": statistics.median(step_s),
            "peak_gib": device.memory_stats().peak_allocated / (1 << 30),
            "recordings": sum(r.captured.recordings for r in step_replays(pipe))}

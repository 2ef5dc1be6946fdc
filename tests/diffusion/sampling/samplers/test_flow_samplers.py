"""The WebUI samplers on flow-matching models against a reference loop: k-diffusion's
samplers (Euler, DPM++ 2M; ComfyUI's rectified-flow Euler a, written out here) over ComfyUI's
"simple" schedule of the model's shifted sigmas, on torch CPU, with the diffusers transformer
as the denoiser (x0 = x - sigma v) and each image's noise from its own seed."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from kdiffusion_ref import K
from support import assert_close

import gpucore
from diffusion.pipelines.flow.flow_sampling import sample_flow
from diffusion.pipelines.flow.flux import FluxPipeline
from diffusion.pipelines.flow.sd3 import StableDiffusion3Pipeline
from diffusion.sampling.kdiffusion_pass import WebUISeeds
from diffusion.sampling.model_sampling import FlowSchedule

TOL = 2e-3
SEEDS = [11, 12]
STEPS = 4


def comfy_simple(sigma_of: Any, table_size: int, steps: int) -> torch.Tensor:
    """ComfyUI's simple_scheduler over model_sampling.sigmas = sigma_of(t), t = 1..T / T."""
    table = sigma_of(torch.arange(1, table_size + 1, dtype=torch.float64) / table_size)
    stride = table_size / steps
    return torch.tensor([float(table[-(1 + int(x * stride))]) for x in range(steps)] + [0.0],
                        dtype=torch.float64)


def euler_ancestral_rf(model: Any, x: Any, sigmas: Any, noise_sampler: Any, *,
                       eta: float = 1.0, s_noise: float = 1.0) -> Any:
    """ComfyUI's sample_euler_ancestral_RF, written in another form than its code (which ours
    follows), so that a slip shared by both cannot pass. x = (1 - sigma) x0 + sigma eps on the
    straight line; each step takes the predicted x0 and eps = (x - (1 - sigma) x0) / sigma and
    lands on sigma_next's line keeping the share `kept` of eps that the Euler step to
    sigma_down = sigma_next (1 + eta (sigma_next / sigma - 1)) carries after its rescale by
    (1 - sigma_next) / (1 - sigma_down), the rest of sigma_next's noise drawn fresh:

        x_next = (1 - s') x0 + kept eps + s_noise sqrt(s'^2 - kept^2) z,
        kept = sigma_down (1 - s') / (1 - sigma_down)

    (x0 alone where s' = 0). Works on torch tensors and numpy arrays alike."""
    for i in range(len(sigmas) - 1):
        sigma, after = float(sigmas[i]), float(sigmas[i + 1])
        x0 = model(x, sigma * (x.new_ones([x.shape[0]]) if hasattr(x, "new_ones") else 1.0))
        if after == 0:
            x = x0
            continue
        eps = (x - (1 - sigma) * x0) / sigma
        down = after * (1 + eta * (after / sigma - 1))
        kept = down * (1 - after) / (1 - down)
        x = (1 - after) * x0 + kept * eps
        if eta > 0:
            x = x + s_noise * math.sqrt(max(after**2 - kept**2, 0.0)) * noise_sampler(sigma, after)
    return x


@pytest.mark.nodevice
@pytest.mark.parametrize("eta, s_noise", [(None, None), (0.6, 0.8), (0.0, 1.0)])
def test_euler_ancestral_rf_is_comfyuis(eta: float | None, s_noise: float | None) -> None:
    """The numpy sampler against the reference above on a toy flow denoiser: its defaults
    (eta 1, s_noise 1), and eta and s_noise away from 1 (each changes the picture); the noise
    drawn for the same steps, asked with the step's sigmas; none needed at eta 0."""
    from diffusion.sampling.samplers import sample_euler_ancestral_rf

    rng = np.random.default_rng(4)
    weight = rng.standard_normal((12, 12)) / math.sqrt(12)

    def denoise(x: np.ndarray, sigma: Any) -> np.ndarray:
        return np.tanh(x.reshape(2, 12) @ weight).reshape(x.shape) * (1 - float(sigma))

    class Stream:
        def __init__(self) -> None:
            self.draws, self.calls = np.random.default_rng(7), []

        def __call__(self, sigma: float, sigma_next: float) -> np.ndarray:
            self.calls.append((float(sigma), float(sigma_next)))
            return self.draws.standard_normal((2, 3, 4))

    x, sigmas = rng.standard_normal((2, 3, 4)), np.array([1.0, 0.8, 0.55, 0.3, 0.1, 0.0])
    options = {} if eta is None else {"eta": eta, "s_noise": s_noise}
    ours, theirs = Stream(), Stream()
    got = sample_euler_ancestral_rf(denoise, x, sigmas, noise=ours, **options)
    want = euler_ancestral_rf(denoise, x, sigmas, theirs, **options)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert ours.calls == theirs.calls
    plain = euler_ancestral_rf(denoise, x, sigmas, Stream())
    assert eta is None or np.abs(want - plain).max() > 1e-2
    if eta == 0:
        np.testing.assert_array_equal(sample_euler_ancestral_rf(denoise, x, sigmas, eta=0), got)
    else:
        with pytest.raises(ValueError, match=r"^Euler a draws noise"):
            sample_euler_ancestral_rf(denoise, x, sigmas, **options)
    seen: list[tuple[int, np.ndarray]] = []
    first = sample_euler_ancestral_rf(denoise, x, sigmas, noise=Stream(), **options,
                                      callback=lambda i, x: (seen.append((i, x)), False)[1])
    assert [i for i, _ in seen] == [0] and first is seen[0][1]


def reference_sample(denoise: Any, sampler: str, sigmas: torch.Tensor,
                     shape: tuple[int, ...]) -> np.ndarray:
    generators = [torch.Generator().manual_seed(seed) for seed in SEEDS]

    def draw(*_: Any) -> torch.Tensor:
        return torch.stack([torch.randn(shape[1:], generator=g) for g in generators]).double()

    x = draw() * sigmas[0]
    with torch.no_grad():
        if sampler == "Euler a":
            out = euler_ancestral_rf(denoise, x, sigmas, draw)
        else:
            function = {"Euler": K.sampling.sample_euler,
                        "DPM++ 2M": K.sampling.sample_dpmpp_2m}[sampler]
            out = function(denoise, x, sigmas, disable=True)
    return out.float().numpy()


@pytest.mark.parametrize("sampler", ["Euler", "Euler a", "DPM++ 2M"])
def test_flux_dev_samplers_match_the_reference(first_device: gpucore.Device,
                                               tiny_flux_dev: tuple[Path, Any],
                                               sampler: str) -> None:
    """FLUX dev: the shift by picture size (ComfyUI's ModelSamplingFlux, 10000 steps in its
    table) and the distilled guidance 3.5."""
    root, reference = tiny_flux_dev
    prompts, height, width = ["a red circle"] * 2, 16, 24
    ours = FluxPipeline.from_pretrained(root / "flux", device=first_device)
    flow, shape, mu = ours.velocity(prompts, height=height, width=width, guidance_scale=3.5,
                                    max_sequence_length=16)
    got = sample_flow(flow, sampler, FlowSchedule(ours.scheduler_config, mu=mu), STEPS,
                      seeds=WebUISeeds(SEEDS, [], 0.0, 0), rng="torch",
                      shape=shape)
    # the reference: diffusers' conditioning and transformer as a k-diffusion denoiser
    with torch.no_grad():
        states, pooled, text_ids = reference.encode_prompt(prompts, None,
                                                           max_sequence_length=16)
    image_ids = reference._prepare_latent_image_ids(2, shape[2] // 2, shape[3] // 2, "cpu",
                                                    torch.float32)

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        packed = reference._pack_latents(x.float(), *shape)
        v = reference.transformer(hidden_states=packed, timestep=sigma.float(),
                                  guidance=torch.full((2,), 3.5), pooled_projections=pooled,
                                  encoder_hidden_states=states, txt_ids=text_ids,
                                  img_ids=image_ids).sample
        v = reference._unpack_latents(v, height, width, reference.vae_scale_factor)
        return x - sigma[:, None, None, None] * v.double()

    sigmas = comfy_simple(lambda t: math.exp(mu) / (math.exp(mu) + (1 / t - 1)), 10000, STEPS)
    assert_close(got, reference_sample(denoise, sampler, sigmas, shape), tol=TOL)


def test_sd3_dpmpp_2m_with_cfg_matches_the_reference(first_device: gpucore.Device,
                                                     tiny_sd3: tuple[Path, Any]) -> None:
    """SD3: the constant shift 3 (ComfyUI's ModelSamplingDiscreteFlow) and CFG 4.5."""
    tmp_path, reference = tiny_sd3
    prompts, height, width, cfg = ["a red circle"] * 2, 16, 24, 4.5
    ours = StableDiffusion3Pipeline.from_pretrained(tmp_path / "sd3", device=first_device)
    flow, shape, mu = ours.velocity(prompts, height=height, width=width, guidance_scale=cfg,
                                    negative_prompt="a dog", max_sequence_length=12)
    got = sample_flow(flow, "DPM++ 2M", FlowSchedule(ours.scheduler_config, mu=mu), STEPS,
                      seeds=WebUISeeds(SEEDS, [], 0.0, 0), rng="torch",
                      shape=shape)
    with torch.no_grad():
        states, negative, pooled, negative_pooled = reference.encode_prompt(
            prompts, None, None, negative_prompt=["a dog"] * 2, max_sequence_length=12)

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        v_text, v_uncond = (reference.transformer(
            hidden_states=x.float(), timestep=sigma.float() * 1000, encoder_hidden_states=s,
            pooled_projections=p).sample.double() for s, p in ((states, pooled),
                                                                (negative, negative_pooled)))
        v = v_uncond + cfg * (v_text - v_uncond)
        return x - sigma[:, None, None, None] * v

    sigmas = comfy_simple(lambda t: 3.0 * t / (1 + 2.0 * t), 1000, STEPS)
    assert_close(got, reference_sample(denoise, "DPM++ 2M", sigmas, shape), tol=TOL)

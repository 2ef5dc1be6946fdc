"""Composable diffusion (the WebUI's `AND`): the guidance of a prompt's parts.

The WebUI (`sd_samplers_cfg_denoiser.CFGDenoiser`) runs the UNet once per part of each image's
prompt and once on the negative prompt, all in one batch, and combines the predictions with
`combine_denoised`:

    denoised[i] = uncond[i]; for each part (row, weight) of image i:
        denoised[i] += (out[row] - uncond[i]) * (weight * cfg_scale)

The expected values here are that loop written out in numpy over the model outputs.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

import gpucore
from diffusion.pipelines.sd.guided_unet import GuidedUNet
from diffusion.sampling.guidance import combine, part_rows
from diffusion.sampling.kdiffusion import CFGDenoiser
from diffusion.sampling.model_sampling import DiscreteSchedule
from gpustd import asarray


def _webui_combine(out_cond: np.ndarray, out_uncond: np.ndarray,
                   conds_list: list[list[tuple[int, float]]], cfg_scale: float) -> np.ndarray:
    """`combine_denoised` with the WebUI's explicit row indexes."""
    denoised = out_uncond.copy()
    for i, conds in enumerate(conds_list):
        for row, weight in conds:
            denoised[i] += (out_cond[row] - out_uncond[i]) * (weight * cfg_scale)
    return denoised


@pytest.mark.nodevice
def test_combine_is_the_webuis_combine_denoised() -> None:
    rng = np.random.default_rng(0)
    uncond = rng.standard_normal((2, 4, 3, 3))
    cond = rng.standard_normal((3, 4, 3, 3))
    weights = ((1.0, -0.5), (1.3,))
    expected = _webui_combine(cond, uncond, [[(0, 1.0), (1, -0.5)], [(2, 1.3)]], 7.0)
    assert np.array_equal(combine(uncond, cond, weights, 7.0), expected)
    closed = uncond.copy()
    closed[0] += 7.0 * ((cond[0] - uncond[0]) - 0.5 * (cond[1] - uncond[0]))
    closed[1] += 7.0 * 1.3 * (cond[2] - uncond[1])
    assert np.allclose(combine(uncond, cond, weights, 7.0), closed, rtol=0, atol=1e-12)
    # one part at weight 1 a picture is plain CFG, to the bit
    plain = uncond + (cond[:2] - uncond) * 7.0
    assert np.array_equal(combine(uncond, cond[:2], None, 7.0), plain)
    assert np.array_equal(combine(uncond, cond[:2], ((1.0,), (1.0,)), 7.0), plain)
    with pytest.raises(ValueError, match="do not fit 2 uncond and 3 cond rows"):
        combine(uncond, cond, ((1.0,), (1.0,)), 7.0)


@pytest.mark.nodevice
def test_part_rows_repeat_each_image_once_per_part() -> None:
    """The cond batch's rows: image i's row once per AND part, images in order (the WebUI's
    conds_list rows), typed out; without weights the batch itself."""
    x = np.array([[[1, 2]], [[3, 4]], [[5, 6]]], dtype=np.float32)  # (3, 1, 2)
    rows = part_rows(x, ((1.0, -0.5), (1.3,), (0.2, 0.3, 0.5)))
    assert rows.shape == (6, 1, 2)
    assert rows.tolist() == [[[1, 2]], [[1, 2]], [[3, 4]], [[5, 6]], [[5, 6]], [[5, 6]]]
    assert part_rows(x, None) is x


def _fake_unet(calls: list[tuple[int, int]]) -> Any:
    """A stand-in UNet whose output tells its rows apart: 2 x + the row's mean context."""

    def step(x: Any, timesteps: Any, hidden: Any) -> Any:
        calls.append((x.shape[0], hidden.shape[1]))
        mean = hidden.numpy().astype(np.float64).mean(axis=(1, 2))
        out = 2 * x.numpy().astype(np.float64) + mean[:, None, None, None]
        return asarray(out.astype(np.float32), device=x.device)

    return step


@pytest.mark.parametrize("uncond_length", [4, 8], ids=["one batch", "two batches"])
def test_each_part_runs_on_its_image_and_is_combined(first_device: gpucore.Device,
                                                     uncond_length: int) -> None:
    """Image 0 has two parts (weights 1, -0.5), image 1 one (1.3): cond rows 0, 1 see image
    0's latents and row 2 image 1's; uncond and cond share a batch when their lengths agree
    (the WebUI's batch_cond_uncond), else run one after the other."""
    rng = np.random.default_rng(1)
    uncond = rng.standard_normal((2, uncond_length, 8)).astype(np.float32)
    cond = rng.standard_normal((3, 4, 8)).astype(np.float32)
    contexts = (asarray(uncond, device=first_device), asarray(cond, device=first_device))
    calls: list[tuple[int, int]] = []
    weights = ((1.0, -0.5), (1.3,))
    unet = GuidedUNet(_fake_unet(calls), lambda step: contexts, dtype=contexts[1].dtype,
                      weights=weights)
    discrete = DiscreteSchedule.from_config({})
    model = CFGDenoiser(unet, discrete, 5.0)
    x = rng.standard_normal((2, 4, 2, 2))
    sigma = 3.0
    denoised = model(x, sigma)

    assert calls == ([(5, 4)] if uncond_length == 4 else [(2, uncond_length), (3, 4)])
    x_in = (x / np.sqrt(sigma**2 + 1)).astype(np.float32).astype(np.float64)
    rows = x_in[[0, 0, 1]]
    out_cond = 2 * rows + cond.astype(np.float64).mean(axis=(1, 2))[:, None, None, None]
    out_uncond = 2 * x_in + uncond.astype(np.float64).mean(axis=(1, 2))[:, None, None, None]
    # epsilon prediction: x0 = x - sigma * eps, of each row's own image
    x0_cond, x0_uncond = x[[0, 0, 1]] - sigma * out_cond, x - sigma * out_uncond
    expected = _webui_combine(x0_cond, x0_uncond, [[(0, 1.0), (1, -0.5)], [(2, 1.3)]], 5.0)
    np.testing.assert_allclose(denoised, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.uncond, x0_uncond, rtol=1e-5, atol=1e-5)  # for CFG++


def test_parts_need_the_uncond(first_device: gpucore.Device) -> None:
    cond = asarray(np.zeros((2, 4, 8), np.float32), device=first_device)
    unet = GuidedUNet(_fake_unet([]), lambda step: (None, cond), dtype=cond.dtype,
                      weights=((1.0, 1.0),))
    with pytest.raises(ValueError, match="guides against the negative prompt"):
        unet(np.zeros((1, 4, 2, 2)), 500.0, 0)


# -- the pipelines, on the tiny models ----------------------------------------------------------

SIZE, STEPS, CFG, SEED = 16, 2, 6.5, 21  # 8x8 latents
PARTS = [("a red cube", 1.0), (" a blue sphere", 0.6), (" snow", -0.4)]
PROMPT = "a red cube AND a blue sphere:0.6 AND snow : -0.4"  # as split_and reads it: PARTS
NEGATIVE = "blurry"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from sd_tiny import write_pipeline

    return write_pipeline(tmp_path_factory.mktemp("tiny-sd-and"))


@pytest.fixture(scope="module")
def ours(model_dir: Any, first_device: gpucore.Device) -> Any:
    from diffusion import load_pipeline

    return load_pipeline(model_dir, device=first_device)


def _final(pipe: Any, prompt: str, **settings: Any) -> tuple[np.ndarray, Any]:
    final: list[np.ndarray] = []
    settings = {"negative_prompt": NEGATIVE, "steps": STEPS, "cfg_scale": CFG, "seed": SEED,
                "width": SIZE, "height": SIZE, "sampler": "Euler", "rng": "torch", **settings}
    result = pipe.txt2img(prompt, on_step=lambda done, total, latents: final.append(latents),
                          **settings)
    return final[-1], result


def _webui_euler(model_dir: Any, cfg_scale: float, batch: int) -> np.ndarray:
    """The WebUI's txt2img with Euler over k-diffusion's discrete epsilon denoiser on
    diffusers' UNet (torch CPU): each part and the negative encoded as prompts of their own
    (short plain texts: diffusers' encode_prompt is the WebUI's conditioning), the UNet on
    every image's parts and its negative in one batch, `combine_denoised` in numpy."""
    diffusers = pytest.importorskip("diffusers", reason="test-only reference")
    import torch
    from kdiffusion_ref import K

    pipe = diffusers.StableDiffusionPipeline.from_pretrained(
        model_dir, safety_checker=None, requires_safety_checker=False)

    class Eps(K.external.DiscreteEpsDDPMDenoiser):
        def get_eps(self, x: Any, t: Any, cond: Any) -> Any:
            return self.inner_model(x, t, encoder_hidden_states=cond).sample

    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    denoiser = Eps(pipe.unet, torch.tensor(np.cumprod(1 - betas), dtype=torch.float32),
                   quantize=False)
    with torch.no_grad():
        encoded = [pipe.encode_prompt(text, "cpu", 1, False)[0] for text, _ in PARTS]
        negative = pipe.encode_prompt(NEGATIVE, "cpu", 1, False)[0]
    context = torch.cat(encoded * batch + [negative] * batch)  # [parts of each image; uncond]
    conds_list = [[(image * len(PARTS) + j, w) for j, (_, w) in enumerate(PARTS)]
                  for image in range(batch)]
    generators = [torch.Generator().manual_seed(SEED + k) for k in range(batch)]
    noise = torch.stack([torch.randn((4, SIZE // 2, SIZE // 2), generator=g)
                         for g in generators]).double().numpy()
    sigmas = denoiser.get_sigmas(STEPS).double().numpy()
    x = noise * sigmas[0]
    for sigma, sigma_next in itertools.pairwise(sigmas):
        rows = np.concatenate([np.repeat(x, len(PARTS), axis=0), x])
        with torch.no_grad():
            out = denoiser(torch.tensor(rows, dtype=torch.float32),
                           torch.full((len(rows),), float(sigma)), cond=context)
        out = out.double().numpy()
        denoised = _webui_combine(out, out[-batch:], conds_list, cfg_scale)
        x = x + (x - denoised) / sigma * (sigma_next - sigma)  # Euler
    return x


def test_sd_and_prompt_against_the_webuis_guidance(ours: Any, model_dir: Any) -> None:
    """Two Euler steps with three parts (one negatively weighted) against the reference: two
    images (each with its parts and its seed) at CFG 6.5; one at CFG 1, where the negative
    prompt still counts (the weights do not sum to 1). The infotext keeps the prompt as
    written. (One test, not two: the reference pipeline loads once.)"""
    from diffusion.infotext import format_infotext

    for cfg_scale, batch in ((CFG, 2), (1.0, 1)):
        latents, result = _final(ours, PROMPT, cfg_scale=cfg_scale, batch_size=batch)
        expected = _webui_euler(model_dir, cfg_scale, batch)
        error = np.linalg.norm(latents - expected) / np.linalg.norm(expected)
        assert error < 5e-4, f"CFG {cfg_scale}: relative error {error:.2e}"
        assert result.settings["prompt"] == PROMPT
    assert format_infotext(result.settings).startswith(PROMPT + "\nNegative prompt: blurry\n")


def test_plain_prompt_guidance_is_unchanged(ours: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A prompt without AND (emphasis, editing, lower-case "and") runs as before composable
    diffusion: one cond row an image, no weights, x0 = uncond + (cond - uncond) * cfg to the
    bit (recomputed here from the UNet's outputs); at CFG 1 no uncond runs at all."""
    calls: list[tuple[Any, ...]] = []
    guided, denoise = GuidedUNet.__call__, CFGDenoiser.__call__

    def spy_unet(self: GuidedUNet, *args: Any) -> Any:
        outputs = guided(self, *args)
        calls.append((self.weights, *outputs))
        return outputs

    def spy_model(self: CFGDenoiser, x: np.ndarray, sigma: float) -> np.ndarray:
        out = denoise(self, x, sigma)
        calls[-1] += (self.discrete, x, sigma, out)
        return out

    monkeypatch.setattr(GuidedUNet, "__call__", spy_unet)
    monkeypatch.setattr(CFGDenoiser, "__call__", spy_model)
    prompt = "a (red:1.2) cube, [blue:green:1] sky, black and white"
    for cfg_scale, batch in ((CFG, 2), (1.0, 1)):
        calls.clear()
        _final(ours, prompt, cfg_scale=cfg_scale, batch_size=batch)
        assert len(calls) == STEPS
        for weights, out_uncond, out_cond, discrete, x, sigma, denoised in calls:
            assert weights is None and len(out_cond) == batch
            cond = discrete.denoised(x, sigma, out_cond)
            if cfg_scale == 1.0:
                assert out_uncond is None and np.array_equal(denoised, cond)
                continue
            uncond = discrete.denoised(x, sigma, out_uncond)
            assert np.array_equal(denoised, uncond + (cond - uncond) * cfg_scale)


def test_timestep_sampler_guides_with_the_parts(ours: Any) -> None:
    """DDIM (the WebUI's timestep samplers combine noise predictions the same way). One
    step is affine in the guided noise, so the run with parts is the negative prompt's run
    (CFG 0) plus each part's own run (CFG 1) less it, times weight * cfg."""

    def run(prompt: str, cfg_scale: float) -> np.ndarray:
        return _final(ours, prompt, cfg_scale=cfg_scale, steps=1, sampler="DDIM")[0]

    uncond = run(PARTS[0][0], 0.0)
    expected = uncond + sum(weight * CFG * (run(text, 1.0) - uncond) for text, weight in PARTS)
    got = run(PROMPT, CFG)
    error = np.linalg.norm(got - expected) / np.linalg.norm(expected)
    assert error < 1e-4, f"relative error {error:.2e}"

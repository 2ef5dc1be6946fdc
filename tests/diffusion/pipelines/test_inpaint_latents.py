"""The latents an img2img / inpaint pass starts from and keeps, as the WebUI makes them
(processing.py, StableDiffusionProcessingImg2Img.init and .sample; sd_samplers_cfg_denoiser.py,
CFGDenoiser's blend): "latent noise" from the job's first batch's seeds, the unmasked latents
kept with a 9-channel UNet too, mask_round off, resize mode 3's latent resize.

A stand-in pipeline (StableDiffusion with its networks replaced: the VAE encoder averages 8x8
blocks, the UNet predicts the same noise EPS everywhere, the decoder keeps the latents) runs
one Euler step from the top sigma to 0, so each expectation is a line of the WebUI's formulas
in numpy, with torch's CPU generator for the noise (the WebUI's "RNG: CPU") and torch's
interpolate for its resizes. Host logic, no device."""

from __future__ import annotations

import warnings
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image
from server_support import StandInPipeline

from diffusion.pipelines.sd.stable_diffusion import StableDiffusion

torch = pytest.importorskip("torch", reason="test-only reference (extra: reference)")
pytestmark = pytest.mark.nodevice

EPS = 0.3  # the stand-in UNet's noise prediction
SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "prediction_type": "epsilon", "steps_offset": 1,
            "clip_sample": False, "set_alpha_to_one": False}
PICTURE = np.random.default_rng(7).integers(0, 256, (32, 32, 3), dtype=np.uint8)


class StandIn(StableDiffusion):
    """What generate() needs of the networks, in numpy; `encoded`: the pictures the VAE
    encoded, `unet_inputs`: what the UNet saw, `latents`: the final latents."""

    def __init__(self, *, inpainting: bool = False) -> None:
        super().__init__(tokenizer=None, text_encoder=None, scheduler_config=SCHEDULE,
                         unet=SimpleNamespace(config={"in_channels": 9 if inpainting else 4,
                                                      "sample_size": 4},
                                              parameters=lambda: iter(()),  # no weights
                                              gemm_accumulate=None,
                                              # its placement: no device, float32
                                              conv_in=SimpleNamespace(weight=SimpleNamespace(
                                                  device=None, dtype=np.float32))),
                         vae=SimpleNamespace(config={"latent_channels": 4,
                                                     "block_out_channels": [1] * 4},
                                             scaling_factor=1.0))
        self.encoded: list[np.ndarray] = []
        self.unet_inputs: list[np.ndarray] = []
        self.latents = np.zeros(0)

    def _encode(self, pixels: np.ndarray, generator: Any, vae: Any = None) -> np.ndarray:
        self.encoded.append(pixels)
        return _blocks(pixels)

    def _guided(self, r: Any, steps: int, *, webui: bool = True, discrete: Any = None) -> Any:
        inputs = self.unet_inputs

        class Guided:  # a GuidedUNet: eps for every image, no AND parts
            weights = None

            def __call__(self, model_in: np.ndarray, t: float, step: int
                         ) -> tuple[None, np.ndarray]:
                inputs.append(model_in)
                return None, np.full((len(model_in), 4, *model_in.shape[2:]), EPS)

        return Guided()

    def _decode(self, latents: np.ndarray, vae: Any = None) -> list[np.ndarray]:
        self.latents = latents
        return [np.zeros((latents.shape[2] * 8, latents.shape[3] * 8, 3), np.uint8)
                for _ in latents]


def _blocks(pixels: np.ndarray) -> np.ndarray:
    """The stand-in encoder: 8x8 block means of (B, 3, H, W), the first channel twice."""
    b, c, h, w = pixels.shape
    means = pixels.reshape(b, c, h // 8, 8, w // 8, 8).mean(axis=(3, 5))
    return np.concatenate([means, means[:, :1]], axis=1)


def _init(picture: np.ndarray) -> np.ndarray:
    """The stand-in's latents of an (H, W, 3) uint8 picture, as the pipeline scales it."""
    return _blocks((picture.astype(np.float64) / 127.5 - 1.0).transpose(2, 0, 1)[None])


def _top_sigma() -> float:
    """k-diffusion's one-step schedule starts at the model's last training sigma."""
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2
    alpha_bar = np.cumprod(1.0 - betas)[-1]
    return float(np.sqrt((1 - alpha_bar) / alpha_bar))


def _randn(seed: int, shape: tuple[int, ...] = (4, 4, 4)) -> np.ndarray:
    """create_random_tensors' draw for one seed on the CPU generator."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).double().numpy()


def _left_half() -> np.ndarray:
    mask = np.zeros((32, 32), np.uint8)
    mask[:, :16] = 255  # latent columns 0 and 1 repainted
    return mask


def _run(pipe: StandIn, **settings: Any) -> np.ndarray:
    """generate() with one Euler step at strength 1 (sigmas: top, 0), the final latents."""
    pipe.generate(**{"prompt": "a", "init_image": PICTURE, "mask": _left_half(), "width": 32,
                     "height": 32, "steps": 1, "strength": 1.0, "sampler": "Euler",
                     "cfg_scale": 1.0, "rng": "torch", "seed": 5, **settings})
    return pipe.latents


def test_latent_noise_is_the_first_batchs() -> None:
    """The second batch of a batch count of 2 (seeds 12, 13 after 10, 11): the WebUI's init()
    ran once, filling the masked latents with all_seeds[0:2] (10, 11); its own seeds draw
    the sampling noise. One Euler step from sigma s to 0 with the blend (CFGDenoiser and
    sample()): init * mask + nmask * (start + s * (noise - EPS)). "latent nothing" has no
    seeds: zeros there, whatever the batch."""
    sigma, init = _top_sigma(), _init(PICTURE)[0]
    nmask = np.zeros((4, 4, 4))
    nmask[..., :2] = 1
    for content, start in ((2, lambda k: _randn(10 + k)), (3, lambda k: 0.0)):
        latents = _run(StandIn(), inpainting_fill=content, batch_size=2, seed=12,
                       latent_noise_seed=10)
        for k in range(2):
            moved = start(k) + sigma * (_randn(12 + k) - EPS)
            np.testing.assert_allclose(latents[k], init * (1 - nmask) + nmask * moved,
                                       rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sampler", ["Euler", "DDIM"])
def test_a_9_channel_unet_keeps_the_unmasked_latents(sampler: str) -> None:
    """The WebUI's p.mask is set for every model and its samplers blend with it (CFGDenoiser,
    before or after each call; sample() at the end): outside the latent mask the result is the
    init latents exactly with a 9-channel UNet too (Euler: and inside, the step's)."""
    pipe = StandIn(inpainting=True)
    latents = _run(pipe, sampler=sampler)
    assert {x.shape[1] for x in pipe.unet_inputs} == {9}
    init = _init(PICTURE)[0]
    np.testing.assert_allclose(latents[0][..., 2:], init[..., 2:], rtol=1e-6, atol=1e-6)
    if sampler == "Euler":
        moved = init + _top_sigma() * (_randn(5) - EPS)
        np.testing.assert_allclose(latents[0][..., :2], moved[..., :2], rtol=1e-5, atol=1e-5)


def test_mask_round_off_keeps_the_blurred_edge() -> None:
    """mask_round False: the latmask is the shrunk mask / 255 unrounded (init()), so the blend
    mixes by its levels: CFGDenoiser's x0 = init * (1 - n) + n * (x - s * EPS), then sample()'s
    init * (1 - n) + n * x0; the 9-channel conditioning is the picture times 1 - mask / 255
    and the mask shrunk by torch's nearest interpolate (inpainting_image_conditioning with
    round_image_mask False)."""
    mask = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (32, 1))  # a soft edge
    pipe = StandIn(inpainting=True)
    latents = _run(pipe, mask=Image.fromarray(mask), mask_round=False)  # a picture's grays
    small = Image.fromarray(mask).convert("RGB").resize((4, 4))  # Pillow's bicubic
    n = np.asarray(small, np.float64)[..., 0] / 255
    assert 0 < n.min() < 0.2 and 0.8 < n.max() < 1  # not rounded: levels, no 0 or 1
    init, sigma = _init(PICTURE)[0], _top_sigma()
    x0 = init * (1 - n) + n * (init + sigma * (_randn(5) - EPS))
    np.testing.assert_allclose(latents[0], init * (1 - n) + n * x0, rtol=1e-5, atol=1e-5)
    levels = torch.from_numpy(mask.astype(np.float32) / 255)[None, None]
    masked = (PICTURE / 127.5 - 1.0).transpose(2, 0, 1)[None] * (1 - levels.numpy())
    np.testing.assert_allclose(pipe.encoded[1], masked, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(pipe.unet_inputs[0][:, 4:5], torch.nn.functional.interpolate(
        levels, size=(4, 4)).numpy(), rtol=1e-6)


def test_resize_mode_3_resizes_the_latents() -> None:
    """img2img "Just resize (latent upscale)": the 40x24 picture encoded as it is (init()
    skips resize_image for mode 3), its latents resized to 32x32's by F.interpolate(bilinear);
    then one Euler step: init + s * (noise - EPS). With a mask the WebUI cannot lay the
    original back over results of another size: refused, saying which modes work; a picture
    of the size drawn needs no resize (as mode 0)."""
    picture = np.random.default_rng(8).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    pipe = StandIn()
    pipe.generate(prompt="a", init_image=picture, width=32, height=32, steps=1, strength=1.0,
                  sampler="Euler", cfg_scale=1.0, rng="torch", seed=5, resize_mode=3)
    assert pipe.encoded[0].shape == (1, 3, 24, 40)
    init = torch.nn.functional.interpolate(torch.from_numpy(_init(picture)), size=(4, 4),
                                           mode="bilinear").numpy()[0]
    moved = init + _top_sigma() * (_randn(5) - EPS)
    np.testing.assert_allclose(pipe.latents[0], moved, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"resize_mode 3 .* give resize_mode 0, 1 or 2"):
        pipe.generate(prompt="a", init_image=picture, mask=np.zeros((24, 40), np.uint8),
                      width=32, height=32, resize_mode=3)
    same = [_run(StandIn(), resize_mode=mode) for mode in (0, 3)]
    np.testing.assert_array_equal(same[0], same[1])


def test_resize_mode_3_with_a_mask_only_masked_finds_blank_is_img2img() -> None:
    """The WebUI drops a mask "Only masked" finds blank (init(): image_mask None, "switch to
    img2img mode"), so resize mode 3 runs: the latents are the img2img's above, nothing kept
    by the all-white mask. A 9-channel UNet's masked picture would be encoded at the picture's
    size, not the latents' (the WebUI's torch.cat fails there): refused, saying what works."""
    picture = np.random.default_rng(8).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    settings = dict(prompt="a", init_image=picture, width=32, height=32, steps=1,
                    strength=1.0, sampler="Euler", cfg_scale=1.0, rng="torch", seed=5,
                    resize_mode=3)
    blank = dict(mask=np.zeros((24, 40), np.uint8), inpaint_full_res=True)
    latents = []
    for extra in ({}, blank):
        pipe = StandIn()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "the mask is blank": said by only_masked
            pipe.generate(**settings, **extra)
        assert pipe.encoded[0].shape == (1, 3, 24, 40)
        latents.append(pipe.latents)
    np.testing.assert_array_equal(latents[0], latents[1])
    with pytest.warns(UserWarning, match="the mask is blank"), pytest.raises(
            ValueError, match=r"inpainting model .* give resize mode 0, 1 or 2"):
        StandIn(inpainting=True).generate(**settings, **blank)


def test_the_server_gives_every_batch_the_first_batchs_latent_noise(tmp_path: Any) -> None:
    """A job of 2 batches of 2 runs image by image: image n's latent noise is seed
    all_seeds[n % 2]'s, as the WebUI's init() made it once for the job."""
    pytest.importorskip("fastapi", reason="server extra (pip install .[server])")
    import base64
    import io

    from fastapi.testclient import TestClient

    from diffusion.pipelines.sd.stable_diffusion import GenerationResult, SamplingDefaults
    from diffusion.server import create_app

    class Recorder:
        native_size = 32
        defaults = SamplingDefaults()
        capabilities = StandInPipeline.capabilities  # the server refuses with them early

        def __init__(self) -> None:
            self.requests: list[Any] = []

        def generate(self, request: Any, *, observer: Any) -> GenerationResult:
            self.requests.append(request)
            return GenerationResult(images=[PICTURE], seeds=[request.seed], settings={
                "prompt": "a", "steps": 1, "sampler": "Euler", "cfg_scale": 7,
                "seed": request.seed, "width": 32, "height": 32})

    def b64(array: np.ndarray) -> str:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode("ascii")

    (tmp_path / "stand-in").mkdir()
    pipe = Recorder()
    with TestClient(create_app(model=tmp_path / "stand-in", loader=lambda path: pipe)) as client:
        response = client.post("/sdapi/v1/img2img", json={
            "prompt": "a", "steps": 2, "seed": 10, "batch_size": 2, "n_iter": 2,
            "init_images": [b64(PICTURE)], "mask": b64(_left_half()), "inpainting_fill": 2})
    assert response.status_code == 200, response.text
    assert [(r.seed, r.latent_noise_seed) for r in pipe.requests] == [(10, 10), (11, 11),
                                                                      (12, 10), (13, 11)]

"""The hires fix on FLUX.2 klein against a reference written out on torch CPU, as
test_qwenimage_hires.py checks Qwen-Image's: k-diffusion's Euler with diffusers' FLUX.2
transformer as the denoiser of the patchified, batch-normalized latents (1/16 of the picture)
over the simple schedule shifted by klein's empirical mu (diffusers' compute_empirical_mu of
the image tokens and the step count: the stretched schedule's in the second pass); the first
pass's latents upscaled as they are by torch's bilinear interpolation (the WebUI's "Latent"),
or decoded by diffusers' FLUX.2 VAE, enlarged by Pillow's Lanczos, cropped around the centre
to whole 16-pixel latents and drawn again from the VAE's posterior, patchified and
normalized; then the WebUI's hires img2img: the schedule stretched by 1 / denoise, its last
steps from sigma0 * noise + (1 - sigma0) * latents, the noise drawn afresh from the seed at
the new size. On img2img the reference pictures steer both passes, against diffusers'
Flux2KleinPipeline running the same two passes. The command line's img2img takes the hires fix
(--hr-*): its picture the generation's, its infotext naming the hires fields."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from flux2_tiny import tiny_flux2_vae
from kdiffusion_ref import K
from PIL import Image

import gpucore
from diffusion.pipelines.load import load_pipeline
from diffusion.pipelines.request import GenerationRequest
from diffusion.upscalers.interpolation import HiresFix

SEED, STEPS, HIRES_STEPS, DENOISE, SIZE = 11, 3, 2, 0.6, 32
BOUND = 2  # uint8 levels; measured: 1 (lavapipe)
TOKENS = 32  # the prompt's (Qwen3's 512 would be slow here)
PROMPT = "a red circle"


@pytest.fixture(scope="module")
def klein(tiny_flux2_klein: tuple[Path, Any], tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[Path, Any]:
    """(a klein folder, diffusers' Flux2KleinPipeline of it): the session's tiny klein with a
    VAE of FLUX.2's 8x (four blocks), so that its latents are 1/16 of the picture as
    FLUX.2's are."""
    import diffusers

    pipe = tiny_flux2_klein[1]
    vae = tiny_flux2_vae(config=dict(block_out_channels=(32,) * 4, layers_per_block=1,
                                     down_block_types=("DownEncoderBlock2D",) * 4,
                                     up_block_types=("UpDecoderBlock2D",) * 4))
    reference = diffusers.Flux2KleinPipeline(**{**pipe.components, "vae": vae},
                                             is_distilled=True)
    folder = tmp_path_factory.mktemp("flux2-hires") / "flux2-klein"
    reference.save_pretrained(folder)
    return folder, reference


@pytest.fixture(scope="module")
def model(first_device: gpucore.Device, klein: tuple[Path, Any]) -> Any:
    """Our pipeline of `klein`'s folder, its prompts TOKENS long."""
    model = load_pipeline(klein[0], device=first_device)
    model.max_sequence_length = TOKENS
    return model


def _simple(steps: int) -> list[float]:
    """The simple schedule's times: every 1000 / steps-th of the 1000 training times from the
    top, unshifted (diffusers' own linspace differs in the last digits, which the tiny random
    model magnifies)."""
    return [(1000 - int(x * 1000 / steps)) / 1000 for x in range(steps)]


def _sigmas(pipe: Any, tokens: int, steps: int) -> torch.Tensor:
    """The simple schedule shifted by klein's mu of `tokens` image tokens and `steps`; 0
    appended."""
    from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu

    mu = compute_empirical_mu(tokens, steps)
    t = torch.tensor(_simple(steps), dtype=torch.float64)
    return torch.cat([pipe.scheduler.time_shift(mu, 1.0, t), torch.zeros(1, dtype=torch.float64)])


def _statistics(pipe: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE's batch-norm mean and standard deviation over the patchified channels."""
    bn, eps = pipe.vae.bn, pipe.vae.config.batch_norm_eps
    return bn.running_mean.view(1, -1, 1, 1), torch.sqrt(bn.running_var.view(1, -1, 1, 1) + eps)


def _picture(pipe: Any, x: torch.Tensor) -> np.ndarray:
    """diffusers' picture of the transformer's latents `x`, as uint8-rounded floats."""
    mean, std = _statistics(pipe)
    z = pipe._unpatchify_latents(x.float() * std + mean)
    image = pipe.vae.decode(z, return_dict=False)[0]
    return ((image[0].permute(1, 2, 0).numpy() / 2 + 0.5).clip(0, 1) * 255).round()


def _encoded(pipe: Any, picture: np.ndarray, side: int) -> torch.Tensor:
    """`picture` enlarged by Lanczos to `side`, cropped around the centre to whole latents,
    drawn from the VAE's posterior with the seed's generator, patchified and normalized."""
    big = Image.fromarray(picture.astype(np.uint8)).resize((side, side),
                                                           Image.Resampling.LANCZOS)
    whole, margin = side // 16 * 16, (side - side // 16 * 16) // 2
    pixels = np.asarray(big, np.float32)[margin:margin + whole, margin:margin + whole]
    pixels = torch.from_numpy(pixels / 127.5 - 1).permute(2, 0, 1)[None]
    z = pipe.vae.encode(pixels).latent_dist.sample(torch.Generator().manual_seed(SEED))
    mean, std = _statistics(pipe)
    return ((pipe._patchify_latents(z) - mean) / std).double()


def _reference(pipe: Any, upscaler: str, side: int) -> tuple[np.ndarray, np.ndarray]:
    """(the hires fix's picture, the picture of where its second pass starts) for a first
    pass at SIZE x SIZE enlarged to `side` by `upscaler` ("Latent" or "Lanczos")."""
    embeds, text_ids = pipe.encode_prompt([PROMPT], device="cpu", max_sequence_length=TOKENS)

    def denoiser(h: int) -> Any:
        ids = pipe._prepare_latent_ids(torch.zeros(1, 1, h, h))

        def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            v = pipe.transformer(hidden_states=pipe._pack_latents(x.float()),
                                 timestep=sigma.float(), guidance=None,
                                 encoder_hidden_states=embeds, txt_ids=text_ids,
                                 img_ids=ids, return_dict=False)[0]
            return x - sigma[:, None, None, None] * v.permute(0, 2, 1).reshape(x.shape).double()

        return denoise

    h, big = SIZE // 16, side // 16
    channels = pipe.transformer.config.in_channels
    # 1. the first pass
    sigmas = _sigmas(pipe, h * h, STEPS)
    noise = torch.randn((channels, h, h), generator=torch.Generator().manual_seed(SEED))
    x = K.sampling.sample_euler(denoiser(h), noise[None].double() * sigmas[0], sigmas,
                                disable=True)
    # 2. the latents as they are, bilinear ("Latent"); or the picture enlarged, encoded again
    if upscaler == "Latent":
        x = torch.nn.functional.interpolate(x, size=(big, big), mode="bilinear")
    else:
        x = _encoded(pipe, _picture(pipe, x), side)
        big = x.shape[-1]
    start = _picture(pipe, x)
    # 3. the hires pass: HIRES_STEPS of a schedule stretched by 1 / denoise
    total = int(HIRES_STEPS / DENOISE)
    sigmas = _sigmas(pipe, big * big, total)[total - (HIRES_STEPS - 1) - 1:]
    noise = torch.randn((channels, big, big), generator=torch.Generator().manual_seed(SEED))
    x = sigmas[0] * noise[None].double() + (1 - sigmas[0]) * x
    x = K.sampling.sample_euler(denoiser(big), x, sigmas, disable=True)
    return _picture(pipe, x), start


@pytest.mark.parametrize(("upscaler", "scale", "side"), [("Latent", 1.5, 48),
                                                          ("Lanczos", 1.75, 56)])
def test_flux2_hires_fix_matches_the_reference(model: Any, klein: tuple[Path, Any],
                                               upscaler: str, scale: float, side: int) -> None:
    """A latent upscaler at 1.5x (32 -> 48), an image upscaler at 1.75x (32 -> 56, cropped
    to 48 as whole latents)."""
    result = model.generate(GenerationRequest(
        prompt=PROMPT, width=SIZE, height=SIZE, steps=STEPS, sampler="Euler", seed=SEED,
        rng="torch", cfg_scale=1.0,
        hires=HiresFix(scale=scale, upscaler=upscaler, steps=HIRES_STEPS, denoise=DENOISE)))
    got = result.images[0].astype(np.float64)
    assert got.shape == (48, 48, 3)
    with torch.no_grad():
        expected, start = _reference(klein[1], upscaler, side)
    assert np.abs(got - expected).max() <= BOUND
    # the bound tells pictures apart: the second pass skipped would be far off
    assert np.abs(got - start).max() > 10 * BOUND
    assert result.settings["hires_upscaler"] == upscaler
    assert (result.settings["width"], result.settings["height"]) == (SIZE, SIZE)


def test_flux2_hires_refusals(model: Any, klein: tuple[Path, Any], tmp_path: Path) -> None:
    """The hires fix with the 'diffusers' sampler (txt2img or img2img beside the references),
    and a VAE module for the hires pass (Forge's hr_additional_modules: FLUX.2 keeps its own
    VAE, even a file of it), each in one line; "Built-in" keeps the model's."""
    from safetensors.torch import save_file
    from vae_layouts import flux2_ae

    from diffusion.loaders import WeightsError
    from diffusion.pipelines.module_load import hires_modules

    folder = klein[0]
    for picture in (None, np.zeros((16, 16, 3), np.uint8)):
        with pytest.raises(ValueError, match="hires fix runs with the WebUI samplers"):
            model.generate(GenerationRequest(prompt="x", width=16, height=16, steps=2,
                                             init_image=picture, sampler="diffusers",
                                             hires=HiresFix(scale=2.0)))
    assert hires_modules(model, folder, ("Built-in",), []).vae is None
    vae = tmp_path / "flux2-vae.safetensors"
    save_file(flux2_ae(klein[1].vae), str(vae))
    with pytest.raises(WeightsError, match="flux2-klein models keep their own VAE"):
        hires_modules(model, folder, ("flux2-vae",), [vae])


def test_flux2_hires_fix_with_the_references(model: Any, klein: tuple[Path, Any],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The hires fix on img2img (FLUX.2's references beside the noise): the picture at the
    hires size, finite; the second pass reads every reference (the init image, the further
    one) as the first did, unchanged. Against diffusers: Flux2KleinPipeline's first pass
    beside the references, its latents enlarged by torch's bilinear interpolation and noised
    to the stretched schedule's first kept sigma by the seed's noise at the new size, then
    finished by Flux2KleinPipeline beside its references over that schedule's last sigmas
    (`sigmas`, `latents`; Flux2KleinInpaintPipeline cannot serve: its first reference is
    always the picture inpainted, which here would be the upscaled first picture, not the
    init image). Another further reference in the second pass alone moves the picture far
    past their difference."""
    from diffusers.pipelines.flux2.image_processor import Flux2ImageProcessor
    from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu

    hires_steps, denoise = 3, 0.75
    # diffusers refuses pictures under 64 px a side (a check of its own, not the model's)
    monkeypatch.setattr(Flux2ImageProcessor, "check_image_input",
                        staticmethod(lambda image, *args, **kwargs: image))
    rng = np.random.default_rng(3)
    init = rng.integers(0, 256, (SIZE, 48, 3), dtype=np.uint8)
    ref, other = (rng.integers(low, high, (SIZE, SIZE, 3), dtype=np.uint8)
                  for low, high in ((0, 60), (200, 256)))
    velocity, read = model.pipe.velocity, []

    def reading(prompts: Any, *, width: int, references: Any, **rest: Any) -> Any:
        read.append((width, references))
        if swap and width == 96:  # the hires pass's: its further reference another
            references = [references[0], other / np.float32(255)]
        return velocity(prompts, width=width, references=references, **rest)

    def ours() -> np.ndarray:
        return model.generate(GenerationRequest(
            prompt=PROMPT, init_image=init, references=(ref,), width=48, height=SIZE,
            steps=STEPS, sampler="Euler", seed=SEED, rng="torch", cfg_scale=1.0,
            hires=HiresFix(scale=2.0, upscaler="Latent", steps=hires_steps,
                           denoise=denoise))).images[0].astype(np.float64)

    # diffusers' hires fix: the first pass, its latents enlarged and noised, the second pass
    # over the stretched schedule's last sigmas
    pipe, settings = klein[1], dict(prompt=PROMPT, max_sequence_length=TOKENS,
                                    output_type="latent")
    images = [Image.fromarray(init), Image.fromarray(ref)]
    mean, std = _statistics(pipe)
    total = int(hires_steps / denoise)
    with torch.no_grad():
        z = pipe(image=images, height=SIZE, width=48, num_inference_steps=STEPS,
                 sigmas=_simple(STEPS), generator=torch.Generator().manual_seed(SEED),
                 **settings).images
        x = (pipe._patchify_latents(z) - mean) / std
        x = torch.nn.functional.interpolate(x, size=(2 * x.shape[2], 2 * x.shape[3]),
                                            mode="bilinear")
        mu = compute_empirical_mu(x.shape[2] * x.shape[3], total)
        t = _simple(total)[total - hires_steps:]
        sigma = pipe.scheduler.time_shift(mu, 1.0, torch.tensor(t[0])).item()
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(SEED))
        z = pipe(image=images, height=2 * SIZE, width=96, num_inference_steps=total, sigmas=t,
                 latents=sigma * noise + (1 - sigma) * x, **settings).images
        expected = _picture(pipe, (pipe._patchify_latents(z) - mean) / std)

    monkeypatch.setattr(model.pipe, "velocity", reading)
    swap = False
    got = ours()
    assert got.shape == (2 * SIZE, 96, 3) and np.isfinite(got).all()
    assert [(width, len(pictures)) for width, pictures in read] == [(48, 2), (96, 2)]
    assert all(np.array_equal(a, b) for a, b in zip(read[0][1], read[1][1], strict=True))
    swap = True
    moved = ours()
    # ours is diffusers' up to the uint8 rounding (measured 3e-3 mean abs, 1 level at most);
    # the other reference moves the picture hundreds of times that (measured 2.7 levels)
    assert np.abs(got - expected).max() <= BOUND and np.abs(got - expected).mean() < 0.02
    assert np.abs(moved - got).mean() > 1.5


def test_flux2_hires_fix_from_the_cli(model: Any, klein: tuple[Path, Any], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`img2img --init-image ... --reference ... --hr-scale 2 --hr-steps 2 --hr-denoise 0.75`
    on the klein folder: a clean run (exit 0, no warning, no traceback), the picture at the
    hires size and the generation's picture of that request (diffusers' above), the infotext
    naming the hires fields and the first pass's size."""
    import diffusion.cli.main as cli
    from diffusion.infotext import parse_infotext, read_infotext
    from diffusion.pipelines.flow.flux2_model import Flux2Model

    monkeypatch.setattr(Flux2Model, "max_sequence_length", TOKENS)
    rng = np.random.default_rng(4)
    init, ref = (rng.integers(low, high, (SIZE, 48, 3), dtype=np.uint8)
                 for low, high in ((0, 256), (0, 60)))
    Image.fromarray(init).save(tmp_path / "init.png")
    Image.fromarray(ref).save(tmp_path / "ref.png")
    out = tmp_path / "hires.png"
    code = cli.main(["img2img", "--model", str(klein[0]), "--init-image",
                     str(tmp_path / "init.png"), "--reference", str(tmp_path / "ref.png"),
                     "--prompt", PROMPT, "--width", "48", "--height", str(SIZE), "--steps", "2",
                     "--sampler", "Euler", "--rng", "torch", "--seed", str(SEED),
                     "--dtype", "float32", "--hr-scale", "2", "--hr-steps", "2",
                     "--hr-denoise", "0.75", "--out", str(out)])
    printed, err = capsys.readouterr()
    assert code == 0, err
    assert printed.strip() == str(out)
    assert "Traceback" not in err and "warn" not in err.lower() and "error" not in err.lower()
    with Image.open(out) as image:
        ours = np.asarray(image.convert("RGB"))
    assert ours.shape == (2 * SIZE, 96, 3)
    expected = model.generate(GenerationRequest(
        prompt=PROMPT, init_image=init, references=(ref,), width=48, height=SIZE, steps=2,
        sampler="Euler", seed=SEED, rng="torch", cfg_scale=1.0,
        hires=HiresFix(scale=2.0, upscaler="Latent", steps=2, denoise=0.75))).images[0]
    np.testing.assert_array_equal(ours, expected)
    text = read_infotext(out) or ""
    for field in ("Size: 48x32", "Denoising strength: 0.75", "Hires upscale: 2",
                  "Hires steps: 2", "Hires upscaler: Latent", "Reference images: 2"):
        assert field in text, (field, text)
    fields = parse_infotext(text)
    # read back, the edit model's one strength is the hires pass's
    read = ("hires_scale", "hires_steps", "hires_upscaler", "hires_denoise", "width", "height")
    assert tuple(fields[key] for key in read) == (2.0, 2, "Latent", 0.75, 48, SIZE)

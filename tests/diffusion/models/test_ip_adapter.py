"""IP-Adapter against diffusers' `load_ip_adapter` (tiny random models, torch CPU): the CLIP
image encoder and CLIPImageProcessor's preparation against transformers, then whole pictures
with a plain (ImageProjection, .safetensors) and a plus (Resampler, .bin) adapter in h94's
layout against StableDiffusionPipeline, with the model folder's scheduler and the same random
draws (see test_controlnet_pipeline)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

diffusers = pytest.importorskip("diffusers", reason="test-only reference (extra: reference)")
import torch  # noqa: E402
import transformers  # noqa: E402
from control_tiny import (  # noqa: E402
    CROSS_ATTENTIONS,
    IP_CONTEXT,
    IP_ENCODER,
    h94_plain,
    ip_layers,
    normal,
    write_image_encoder,
)
from PIL import Image  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402
from sd_tiny import write_pipeline  # noqa: E402
from support import assert_close, assert_input_matters  # noqa: E402

import diffusion.cli.main as cli  # noqa: E402
import gpucore  # noqa: E402
from diffusion import load_pipeline  # noqa: E402
from diffusion.loaders.control.ip_adapter_file import load_image_encoder, load_ip_adapter  # noqa: E402
from diffusion.loaders.errors import WeightsError  # noqa: E402
from diffusion.models.clip_vision import clip_pixels  # noqa: E402
from diffusion.models.ip_adapter import cross_attentions  # noqa: E402
from diffusion.pipelines.ip_adapter import IPAdapterUnit, use_ip_adapters  # noqa: E402
from diffusion.preprocessors import IP_ADAPTER_MODULES, module_list, preprocess  # noqa: E402

SIZE, STEPS = 32, 2
PROMPT, NEGATIVE = "a lighthouse at dusk, oil painting", "blurry"
def _picture(seed: int, shape: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    base = np.stack([x * 5, y * 6, (x + y) * 3], axis=-1) % 256
    return (base + rng.integers(0, 40, (*shape, 3))).clip(0, 255).astype(np.uint8)


def _h94_plus(seed: int, hidden: int = 128) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    width = IP_ENCODER["hidden_size"]
    out = {"image_proj.latents": rng.standard_normal((1, 16, hidden)).astype(np.float32),
           "image_proj.proj_in.weight": normal(rng, hidden, width),
           "image_proj.proj_in.bias": normal(rng, hidden) * 0.1,
           "image_proj.proj_out.weight": normal(rng, IP_CONTEXT, hidden),
           "image_proj.proj_out.bias": normal(rng, IP_CONTEXT) * 0.1,
           "image_proj.norm_out.weight": 1 + normal(rng, IP_CONTEXT) * 0.1,
           "image_proj.norm_out.bias": normal(rng, IP_CONTEXT) * 0.1}
    for i in range(4):  # diffusers builds 4 blocks whatever the file has
        at = f"image_proj.layers.{i}."
        for norm in ("0.norm1", "0.norm2", "1.0"):
            out[f"{at}{norm}.weight"] = 1 + normal(rng, hidden) * 0.1
            out[f"{at}{norm}.bias"] = normal(rng, hidden) * 0.1
        out[f"{at}0.to_q.weight"] = normal(rng, hidden, hidden)
        out[f"{at}0.to_kv.weight"] = normal(rng, 2 * hidden, hidden)
        out[f"{at}0.to_out.weight"] = normal(rng, hidden, hidden)
        out[f"{at}1.1.weight"] = normal(rng, 4 * hidden, hidden)
        out[f"{at}1.3.weight"] = normal(rng, hidden, 4 * hidden)
    return {**out, **ip_layers(rng)}


def _save_bin(state: dict[str, np.ndarray], path: Path) -> None:
    """h94's .bin: {"image_proj": {...}, "ip_adapter": {...}}."""
    nested: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
    for key, value in state.items():
        group, _, name = key.partition(".")
        nested[group][name] = torch.from_numpy(value)
    torch.save(nested, path)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    folder = tmp_path_factory.mktemp("image_encoder")
    return write_image_encoder(folder), folder


def test_clip_pixels_match_clip_image_processor(first_device: gpucore.Device) -> None:
    processor = transformers.CLIPImageProcessorPil(size=SIZE, crop_size=SIZE)
    for shape in ((45, 37), (29, 61), (32, 32)):
        picture = _picture(3, shape)
        want = processor(Image.fromarray(picture), return_tensors="np").pixel_values
        got = clip_pixels(picture, SIZE, device=first_device)
        assert got.shape == want.shape
        # the resize is Pillow 13's, bit for bit; an older Pillow resizes in the other pass
        # order where the height shrinks most (python-pillow/Pillow#9549), and its uint8
        # intermediate may put a value one level (1/255/std) apart (6 of 3072 with Pillow 12.3)
        level = 1 / 255 / np.array(processor.image_std).reshape(1, 3, 1, 1)
        off = np.abs(got - want)
        assert (off <= level + 1e-5).all() and (off > 1e-5).mean() < 0.01, off.max()


def test_image_encoder_matches_transformers(device: gpucore.Device, encoder: Any,
                                            tmp_path: Path) -> None:
    """The folder, and one safetensors file whose config comes from the shapes (heads by
    width: this tiny width gets width // 64 = 1 head, so the file is checked on its own)."""
    reference, folder = encoder
    pixels = np.random.default_rng(4).standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)
    with torch.no_grad():
        out = reference(torch.from_numpy(pixels), output_hidden_states=True)
    ours = load_image_encoder(folder, device=device)
    assert_close(ours(pixels).numpy(), out.image_embeds.numpy(), tol=1e-4)
    assert_close(ours.hidden_states(pixels, -2).numpy(), out.hidden_states[-2].numpy(),
                 tol=1e-4)
    single = tmp_path / "clip_vision.safetensors"
    save_file({k: v.numpy() for k, v in reference.state_dict().items()}, single)
    from_file = load_image_encoder(single, device=device)
    assert from_file.config["image_size"] == SIZE and from_file.config["patch_size"] == 8
    assert from_file.config["num_hidden_layers"] == 3


def test_image_encoder_in_float16(f16_device: gpucore.Device, encoder: Any) -> None:
    """float16 weights and activations (what a float16 pipeline loads it in) against
    transformers' float32."""
    reference, folder = encoder
    pixels = np.random.default_rng(5).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    with torch.no_grad():
        out = reference(torch.from_numpy(pixels), output_hidden_states=True)
    ours = load_image_encoder(folder, dtype=np.float16, device=f16_device)
    assert_close(ours(pixels).numpy().astype(np.float32), out.image_embeds.numpy(),
                 dtype=np.float16)
    # the worst element's |error| / (rms + |expected|) measured on lavapipe: 1.9e-2 (hidden
    # states up to 33, where float16's step is 0.03; the same on every run: 2x)
    assert_close(ours.hidden_states(pixels).numpy().astype(np.float32),
                 out.hidden_states[-2].numpy(), tol=4e-2)


def _same_draws(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    rng = np.random.default_rng(seed)

    def randn_tensor(shape: Any, generator: Any = None, device: Any = None, dtype: Any = None,
                     layout: Any = None) -> torch.Tensor:
        return torch.from_numpy(rng.standard_normal(tuple(shape))).to(dtype or torch.float32)

    for name in ("diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion",
                 "diffusers.models.autoencoders.vae"):
        monkeypatch.setattr(importlib.import_module(name), "randn_tensor", randn_tensor)


def _reference_pipeline(model_dir: Path, encoder: Any, folder: Path, weight_name: str) -> Any:
    reference = diffusers.StableDiffusionPipeline.from_pretrained(
        model_dir, image_encoder=encoder, safety_checker=None, requires_safety_checker=False)
    reference.load_ip_adapter(str(folder), subfolder="", weight_name=weight_name,
                              image_encoder_folder=None)
    reference.set_progress_bar_config(disable=True)
    return reference


def _assert_same_picture(got: np.ndarray, expected: np.ndarray) -> None:
    """The SD parity tests' tolerance (test_controlnet_pipeline)."""
    got = got.astype(np.int16)
    diff = np.abs(got - np.round(expected * 255).astype(np.int16))
    assert diff.mean() < 0.5 and diff.max() <= 4, (diff.mean(), diff.max())
    assert got.std() > 5


@pytest.mark.parametrize("kind", ["plain", "plus"])
def test_ip_adapter_txt2img_matches_diffusers(first_device: gpucore.Device, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str], encoder: Any,
                                              kind: str) -> None:
    """The plain adapter (.safetensors) through the command line with --rng torch (diffusers'
    own torch generator on the other side), the plus one (.bin) through Python with the same
    numpy draws on both sides. The hook is host logic over ops checked on every adapter: the
    first adapter."""
    reference_encoder, encoder_dir = encoder
    model_dir = write_pipeline(tmp_path / "sd")
    picture = _picture(5, (45, 37))
    settings = dict(negative_prompt=NEGATIVE, num_inference_steps=STEPS, guidance_scale=7.5,
                    height=SIZE, width=SIZE, output_type="np")
    if kind == "plain":
        weight_name = "ip-adapter_tiny.safetensors"
        save_file(h94_plain(31), tmp_path / weight_name)
        Image.fromarray(picture).save(tmp_path / "look.png")
        monkeypatch.setattr(gpucore, "default_device", lambda: first_device)
        code = cli.main(["txt2img", "--model", str(model_dir), "--prompt", PROMPT,
                         "--negative-prompt", NEGATIVE, "--steps", str(STEPS), "--cfg-scale", "7.5",
                         "--seed", "7", "--width", str(SIZE), "--height", str(SIZE),
                         "--sampler", "diffusers", "--rng", "torch", "--dtype", "float32",
                         "--ip-adapter", str(tmp_path / weight_name), "--ip-image",
                         str(tmp_path / "look.png"), "--ip-scale", "0.7",
                         "--image-encoder", str(encoder_dir), "--out",
                         str(tmp_path / "out.png")])
        assert code == 0, capsys.readouterr().err
        got = np.asarray(Image.open(tmp_path / "out.png"))[None]
    else:
        weight_name = "ip-adapter-plus_tiny.bin"
        _save_bin(_h94_plus(32), tmp_path / weight_name)
        adapter = load_ip_adapter(tmp_path / weight_name, image_encoder=encoder_dir,
                                  device=first_device)
        assert adapter.plus
        ours = load_pipeline(model_dir, device=first_device)
        unit = IPAdapterUnit(adapter, picture, weight=0.7, schedule="diffusers")
        got = np.stack(ours.txt2img(PROMPT, negative_prompt=NEGATIVE, steps=STEPS,
                                    cfg_scale=7.5, seed=7, width=SIZE, height=SIZE,
                                    sampler="diffusers", control=[unit]).images)
        # a generation without the unit finds the UNet as it was: its IP layers removed
        layers = list(cross_attentions(ours.unet))
        assert len(layers) == CROSS_ATTENTIONS and all(a.ip_layers for a in layers)
        use_ip_adapters(ours.unet, [])
        assert not any(hasattr(a, "ip_layers") for a in layers)

    reference = _reference_pipeline(model_dir, reference_encoder, tmp_path, weight_name)

    def run_reference(scale: float) -> np.ndarray:
        reference.set_ip_adapter_scale(scale)
        if kind == "plain":
            generator = torch.Generator("cpu").manual_seed(7)
            return reference(PROMPT, ip_adapter_image=Image.fromarray(picture),
                             generator=generator, **settings).images
        _same_draws(monkeypatch, 7)
        return reference(PROMPT, ip_adapter_image=Image.fromarray(picture), **settings).images

    expected = run_reference(0.7)
    _assert_same_picture(got, expected)
    assert_input_matters(expected, run_reference(0.0), "the adapter")


def test_webui_sampler_applies_the_unit(first_device: gpucore.Device, tmp_path: Path,
                                       encoder: Any) -> None:
    """Euler a with a plus adapter against the WebUI's recipe on k-diffusion (as
    tests/diffusion/samplers/test_kdiffusion_txt2img.py builds it: diffusers' UNet, here with
    the adapter loaded, in a discrete epsilon denoiser, guidance on the denoised predictions,
    cond rows first, one torch generator for the noise), the picture's tokens on the prompt's
    rows and the zero picture's on the negative prompt's."""
    from kdiffusion_ref import K

    reference_encoder, encoder_dir = encoder
    model_dir = write_pipeline(tmp_path / "sd")
    _save_bin(_h94_plus(34), tmp_path / "plus.bin")
    picture, steps, cfg, seed = _picture(8, (37, 45)), 4, 6.5, 1234
    ours = load_pipeline(model_dir, device=first_device)
    unit = IPAdapterUnit(load_ip_adapter(tmp_path / "plus.bin", image_encoder=encoder_dir,
                                         device=first_device), picture, weight=0.7)
    final: list[np.ndarray] = []
    ours.txt2img(PROMPT, negative_prompt=NEGATIVE, steps=steps, cfg_scale=cfg, seed=seed,
                 width=16, height=16, sampler="Euler a", rng="torch", control=[unit],
                 on_step=lambda done, total, latents: final.append(latents))

    pipe = _reference_pipeline(model_dir, reference_encoder, tmp_path, "plus.bin")
    pipe.set_ip_adapter_scale(0.7)
    with torch.no_grad():
        cond, uncond = pipe.encode_prompt(PROMPT, "cpu", 1, True, NEGATIVE)
        # the encoder's input as ours reads it: CLIPImageProcessor's resize is the installed
        # Pillow's, whose pass order changed in Pillow 13 (test_clip_pixels_...)
        pixels = torch.from_numpy(clip_pixels(picture, SIZE))
        negative, positive = (  # (1, images, tokens, width), as diffusers prepares them
            pipe.image_encoder(p, output_hidden_states=True).hidden_states[-2][:, None]
            for p in (torch.zeros_like(pixels), pixels))
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2

    class Eps(K.external.DiscreteEpsDDPMDenoiser):
        def get_eps(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> Any:
            tokens = {"image_embeds": [torch.cat([positive, negative])]}
            return self.inner_model(x, t, encoder_hidden_states=cond,
                                    added_cond_kwargs=tokens).sample

    denoiser = Eps(pipe.unet, torch.tensor(np.cumprod(1 - betas), dtype=torch.float32),
                   quantize=False)

    def model(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        out = denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]),
                       cond=torch.cat([cond, uncond]))
        on_prompt, on_negative = out.chunk(2)
        return on_negative + (on_prompt - on_negative) * cfg

    def sample() -> np.ndarray:
        generator = torch.Generator().manual_seed(seed)
        sigmas = denoiser.get_sigmas(steps).to(torch.float32)
        x = torch.randn((1, 4, 8, 8), generator=generator) * sigmas[0]
        with torch.no_grad():
            return K.sampling.sample_euler_ancestral(
                model, x, sigmas, disable=True,
                noise_sampler=lambda *_: torch.randn((1, 4, 8, 8), generator=generator)
            ).double().numpy()

    expected = sample()
    error = np.linalg.norm(final[-1] - expected) / np.linalg.norm(expected)
    assert error < 5e-4, f"relative error {error:.2e}"  # the k-diffusion tests' tolerance
    pipe.set_ip_adapter_scale(0.0)  # the adapter matters at 10x that tolerance
    moved = np.linalg.norm(sample() - expected) / np.linalg.norm(expected)
    assert moved > 5e-3, f"the adapter moves the result by only {moved:.2e}"


def test_sdxl_ip_adapter_matches_diffusers(first_device: gpucore.Device, tmp_path: Path,
                                          encoder: Any) -> None:
    """A plain adapter on the tiny SDXL base (sdxl_tiny: 12 cross-attention layers, two
    transformer blocks deep in down_blocks.1, up_blocks.0 and the mid block; context 64), as
    the SDXL tests run it (rng torch against diffusers' torch generator)."""
    from sdxl_tiny import save_folder, sdxl_pipeline

    reference_encoder, encoder_dir = encoder
    reference = sdxl_pipeline("base", scratch=tmp_path / "scratch")
    model_dir = save_folder(reference, tmp_path / "sdxl")
    save_file(h94_plain(33, context=64, layers=12), tmp_path / "ip-adapter_sdxl_tiny.safetensors")
    picture = _picture(6, (40, 52))
    ours = load_pipeline(model_dir, device=first_device)
    unit = IPAdapterUnit(load_ip_adapter(tmp_path / "ip-adapter_sdxl_tiny.safetensors",
                                         image_encoder=encoder_dir, device=first_device),
                         picture, weight=0.8, schedule="diffusers")
    got = ours.txt2img(PROMPT, steps=2, cfg_scale=6.0, seed=5, width=SIZE, height=SIZE,
                       sampler="diffusers", rng="torch", control=[unit]).images
    reference.register_modules(image_encoder=reference_encoder, feature_extractor=None)
    reference.load_ip_adapter(str(tmp_path), subfolder="",
                              weight_name="ip-adapter_sdxl_tiny.safetensors",
                              image_encoder_folder=None)
    reference.set_ip_adapter_scale(0.8)
    reference.set_progress_bar_config(disable=True)
    expected = reference(PROMPT, ip_adapter_image=Image.fromarray(picture), num_inference_steps=2,
                         guidance_scale=6.0, width=SIZE, height=SIZE,
                         generator=torch.Generator().manual_seed(5), output_type="np").images
    _assert_same_picture(np.stack(got), expected)
    reference.set_ip_adapter_scale(0.0)
    without = reference(PROMPT, ip_adapter_image=Image.fromarray(picture), num_inference_steps=2,
                        guidance_scale=6.0, width=SIZE, height=SIZE,
                        generator=torch.Generator().manual_seed(5), output_type="np").images
    assert_input_matters(expected, without, "the adapter")
    with pytest.raises(ValueError, match="made for another UNet"):  # an SD 1.5 adapter
        save_file(h94_plain(1), tmp_path / "sd15.safetensors")
        ours.txt2img(PROMPT, steps=1, seed=5, width=SIZE, height=SIZE, control=[IPAdapterUnit(
            load_ip_adapter(tmp_path / "sd15.safetensors", image_encoder=encoder_dir,
                            device=first_device), picture)])


@pytest.mark.parametrize("argv, message", [
    (("--ip-adapter", "ip.safetensors"), "one --ip-image per --ip-adapter"),
    (("--ip-adapter", "ip.safetensors", "--ip-image", "look.png"), "needs --image-encoder"),
    (("--ip-image", "look.png"), "need --ip-adapter"),
    (("--ip-adapter", "missing.bin", "--ip-image", "look.png", "--image-encoder", "."),
     "--ip-adapter 'missing.bin' does not exist"),
    (("--ip-adapter", "ip.safetensors", "--ip-image", "nothing.png", "--image-encoder", "."),
     "--ip-image 'nothing.png' does not exist"),
    (("--ip-adapter", "ip.safetensors", "--ip-image", "look.png", "--image-encoder", ".",
      "--ip-scale", "1", "--ip-scale", "2"), "one --ip-scale for all"),
])
def test_bad_ip_adapter_options_are_one_error_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        argv: tuple[str, ...], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model").mkdir()
    (tmp_path / "ip.safetensors").write_bytes(b"")
    Image.new("RGB", (8, 8)).save(tmp_path / "look.png")
    code = cli.main(["txt2img", "--model", "model", "--prompt", "a", "--seed", "1", *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: ")
    assert message in err and "Traceback" not in err


def test_bad_files_are_named(tmp_path: Path, first_device: gpucore.Device,
                             encoder: Any) -> None:
    path = tmp_path / "not-an-adapter.safetensors"
    save_file({"something.weight": np.zeros((2, 2), np.float32)}, path)
    with pytest.raises(WeightsError, match="not-an-adapter") as caught:
        load_ip_adapter(path, device=first_device)
    assert str(caught.value).count("not an IP-Adapter") == 1, caught.value  # said once
    with pytest.raises(WeightsError, match="no such"):
        load_ip_adapter(tmp_path / "missing.bin", device=first_device)
    adapter = load_ip_adapter(_write(tmp_path), device=first_device)
    assert adapter.embed_dim == IP_ENCODER["projection_dim"] and adapter.encoder_name is None
    with pytest.raises(ValueError, match="image encoder"):
        IPAdapterUnit(adapter, _picture(1, (8, 8)))
    plus = tmp_path / "plus.safetensors"  # the plus adapter reads 32-wide hidden states
    save_file({k: v for k, v in _h94_plus(2).items() if k != "image_proj.proj_in.weight"}
              | {"image_proj.proj_in.weight": normal(np.random.default_rng(0), 128, 24)}, plus)
    with pytest.raises(ValueError, match="reads 24-wide hidden states; this image encoder "
                                         "gives 32"):
        IPAdapterUnit(load_ip_adapter(plus, image_encoder=encoder[1], device=first_device),
                      _picture(1, (8, 8)))


def _write(tmp_path: Path) -> Path:
    path = tmp_path / "ip.safetensors"
    save_file(h94_plain(1), path)
    return path


def test_modules_and_infotext(first_device: gpucore.Device, tmp_path: Path,
                              encoder: Any) -> None:
    """The extension's IP-Adapter modules are listed and pass the picture as it is; a unit
    writes itself as the extension writes one."""
    picture = _picture(2, (9, 7))
    for module in IP_ADAPTER_MODULES:
        assert module in module_list()
        np.testing.assert_array_equal(preprocess(module, picture, device=first_device), picture)
    unit = IPAdapterUnit(load_ip_adapter(_write(tmp_path), image_encoder=encoder[1],
                                         device=first_device), picture, weight=0.6,
                         guidance_end=0.8)
    assert unit.infotext() == (
        "Module: ip-adapter_clip_h, Model: ip, Weight: 0.6, Resize Mode: Crop and Resize, "
        "Processor Res: 512, Threshold A: 0.5, Threshold B: 0.5, Guidance Start: 0.0, "
        "Guidance End: 0.8, Pixel Perfect: False, Control Mode: Balanced")


def test_from_infotext_repeats_an_ip_adapter_picture(first_device: gpucore.Device,
                                                     tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str],
                                                     encoder: Any) -> None:
    """--ip-adapter writes the unit as the extension does; --from-infotext finds the adapter
    by that name in --controlnet-dir and, with --image-encoder, makes the same picture."""
    model_dir = write_pipeline(tmp_path / "sd")
    (tmp_path / "ControlNet").mkdir()
    save_file(h94_plain(35), tmp_path / "ControlNet" / "ip-adapter_tiny.safetensors")
    Image.fromarray(_picture(9, (30, 41))).save(tmp_path / "look.png")
    monkeypatch.setattr(gpucore, "default_device", lambda: first_device)
    common = ["txt2img", "--model", str(model_dir), "--dtype", "float32",
              "--image-encoder", str(encoder[1])]
    code = cli.main([*common, "--prompt", PROMPT, "--steps", "2", "--seed", "4", "--width",
                     str(SIZE), "--height", str(SIZE), "--ip-adapter",
                     str(tmp_path / "ControlNet" / "ip-adapter_tiny.safetensors"),
                     "--ip-image", str(tmp_path / "look.png"), "--ip-scale", "0.8",
                     "--out", str(tmp_path / "first.png")])
    assert code == 0, capsys.readouterr().err
    code = cli.main([*common, "--from-infotext", str(tmp_path / "first.png"),
                     "--controlnet-dir", str(tmp_path / "ControlNet"), "--control-image",
                     str(tmp_path / "look.png"), "--out", str(tmp_path / "again.png")])
    assert code == 0, capsys.readouterr().err
    from diffusion.infotext import read_infotext

    # the extension's text both times: the model's title with its hash, the numbers as floats
    written = [re.search(r'ControlNet 0: "([^"]*)"', str(read_infotext(tmp_path / name)))
               for name in ("first.png", "again.png")]
    assert written[0] and written[1] and written[0][1] == written[1][1], written
    assert re.match(r"Module: ip-adapter_clip_h, Model: ip-adapter_tiny \[[0-9a-f]{8}\], "
                    r"Weight: 0\.8, Resize Mode: Crop and Resize, Processor Res: 512, Threshold "
                    r"A: 0\.5, Threshold B: 0\.5, Guidance Start: 0\.0, Guidance End: 1\.0",
                    written[0][1]), written[0][1]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "again.png")),
                                  np.asarray(Image.open(tmp_path / "first.png")))

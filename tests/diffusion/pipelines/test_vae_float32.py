"""The VAE in float32 under a float16 model (diffusion/pipelines/vae_float32.py): a float16 VAE
whose pictures overflow is made float32 from its own weights and decodes again, as the WebUI's
automatic revert does, giving diffusers' float32 picture of the same latents;
`--no-half-vae` (generate, serve) starts there. A float32 VAE that gives NaN:
test_finite.py."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from sd_tiny import tiny_vae, write_pipeline

import diffusion
import gpucore
from diffusion.cli import load_models as load_cli
from diffusion.cli import main as main_cli
from diffusion.cli.main import build_parser, main
from diffusion.pipelines.finite import (
    NonFiniteError,
    VaeNonFiniteError,
    check_decoded,
    check_encoded,
)
from diffusion.pipelines.sd.memory import MemoryMode
from diffusion.pipelines.vae_float32 import VaeRevertWarning, float32_copy, reverting
from diffusion.server.jobs.loader import PipelineLoader
from diffusion.server.settings import ServerSettings

SETTINGS = dict(steps=2, seed=3, width=64, height=64)


def _overflowing_vae(part: str = "decoder") -> Any:
    """diffusers' tiny VAE (float32, CPU) whose decoder's (or encoder's) stream reaches ~1e5,
    past float16's 65504: conv_in's weights and bias times 3e4 (its GroupNorms take the scale
    out again, so the float32 output is an ordinary one), rounded to float16 as a float16
    model holds them."""
    import torch

    vae = tiny_vae()
    with torch.no_grad():
        getattr(vae, part).conv_in.weight.mul_(3e4)
        getattr(vae, part).conv_in.bias.mul_(3e4)
        for p in vae.parameters():
            p.copy_(p.half().float())
    return vae


def _diffusers_pictures(vae: Any, latents: np.ndarray) -> np.ndarray:
    """Reference: diffusers' float32 decode on the CPU, as uint8 pictures (B, H, W, 3)."""
    import torch

    with torch.no_grad():
        x = vae.decode(torch.from_numpy(latents / vae.config.scaling_factor)).sample.numpy()
    return np.round(np.clip(x / 2 + 0.5, 0, 1) * 255).astype(np.uint8).transpose(0, 2, 3, 1)


def test_a_nan_vae_is_made_float32_and_decodes_again(f16_device: gpucore.Device, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiny SD model in float16 with the overflowing VAE, under --medvram: generate
    warns, once, and gives diffusers' float32 picture of its latents; the VAE stays float32,
    the memory mode's VAE unit with it."""
    vae = _overflowing_vae()
    pipe = diffusion.load_pipeline(write_pipeline(tmp_path / "model", vae=vae),
                                   dtype="float16", device=f16_device)
    pipe.set_memory_mode(MemoryMode(medvram=True))
    half, seen = pipe.vae, []
    decode = pipe._decode
    monkeypatch.setattr(pipe, "_decode", lambda latents, *rest: seen.append(latents)
                        or decode(latents, *rest))
    said_re = (r"^the model's VAE \(.+\) gave NaN in 100.0% of its values in its float16 "
               r"decode .*that VAE now runs in float32 .*--no-half-vae")
    with pytest.warns(VaeRevertWarning, match=said_re) as said:
        result = pipe.generate("a red circle", **SETTINGS)
    assert len(said) == 1 and len(seen) == 2  # float16 (NaN), then float32
    assert np.array_equal(seen[0], seen[1])  # the same latents decoded again
    assert pipe.vae.decoder.conv_in.weight.dtype == np.float32  # a float32 copy of its own
    assert half.decoder.conv_in.weight.dtype == np.float16 and float32_copy(half) is not half
    assert pipe.vae in pipe.memory.residency and half not in pipe.memory.residency
    picture = result.images[0]
    assert picture.std() > 10  # a picture, not a flat fill
    expected = _diffusers_pictures(vae, seen[1].astype(np.float32))[0]
    assert np.abs(picture.astype(int) - expected).max() <= 1
    assert not pipe.use_float32_vae()  # float32 now: nothing left to revert
    assert float32_copy(pipe.vae) is pipe.vae


def test_an_encoder_that_gives_nan_is_made_float32_too(f16_device: gpucore.Device,
                                                       tmp_path: Path) -> None:
    """img2img on the tiny SD model in float16 whose VAE encoder overflows: the encode's NaN
    is the VAE's (not the UNet's, which the NaN latents would otherwise reach), the VAE is
    made float32 and the run made again: a picture, not an error."""
    pipe = diffusion.load_pipeline(write_pipeline(tmp_path / "model",
                                                  vae=_overflowing_vae("encoder")),
                                   dtype="float16", device=f16_device)
    picture = np.random.default_rng(5).integers(0, 255, (64, 64, 3), np.uint8)
    with pytest.warns(VaeRevertWarning):
        result = pipe.generate("a red circle", init_image=picture, strength=0.6, **SETTINGS)
    assert pipe.vae.decoder.conv_in.weight.dtype == np.float32
    assert np.isfinite(result.images[0]).all() and result.images[0].std() > 10


def _vae_file(vae: Any, path: Path) -> Path:
    """`vae` (diffusers') as a bare LDM-layout VAE file, as a hires module's is."""
    from ldm_files import ldm_vae
    from safetensors.torch import save_file

    state = ldm_vae(vae.state_dict())
    save_file({k.removeprefix("first_stage_model."): v.contiguous() for k, v in state.items()},
              str(path))
    return path


def test_a_hires_pass_s_own_vae_is_made_float32_too(f16_device: gpucore.Device, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Forge's hr_additional_modules: the tiny SD model in float16, its own VAE sound, its
    hires pass decoding by a VAE file that overflows. As the model's: a warning naming that
    file, diffusers' float32 picture of the hires latents, and the pipeline keeps the float32
    copy for that file's next hires passes; the model's own VAE stays float16."""
    from diffusion.pipelines.module_load import _kept_vae, hires_modules
    from diffusion.upscalers.interpolation import HiresFix

    vae = _overflowing_vae()
    file = _vae_file(vae, tmp_path / "overflowing.safetensors")
    model = write_pipeline(tmp_path / "model")
    pipe = diffusion.load_pipeline(model, dtype="float16", device=f16_device)
    modules = hires_modules(pipe, model, ("overflowing",), [file])
    half, seen = modules.vae, []
    assert half.decoder.conv_in.weight.dtype == np.float16
    decode = pipe._decode
    monkeypatch.setattr(pipe, "_decode", lambda latents, vae=None: seen.append((latents, vae))
                        or decode(latents, vae))
    with pytest.warns(VaeRevertWarning, match=r"^the hires pass's VAE \(from "
                      r"overflowing.safetensors\) gave NaN .*float16 decode") as said:
        result = pipe.generate("a red circle", hires=HiresFix(scale=1.5, steps=1),
                               hires_modules=modules, **SETTINGS)
    assert len(said) == 1 and [v for _, v in seen] == [half, modules.vae]
    assert modules.vae.decoder.conv_in.weight.dtype == np.float32
    assert pipe.vae.decoder.conv_in.weight.dtype == np.float16  # not the one that overflowed
    assert _kept_vae(pipe, file) is modules.vae  # kept float32 for the file's next passes
    picture = result.images[0]
    assert picture.shape == (96, 96, 3) and picture.std() > 10
    expected = _diffusers_pictures(vae, seen[1][0].astype(np.float32))[0]
    assert np.abs(picture.astype(int) - expected).max() <= 1
    assert not modules.use_float32_vae()


def test_the_model_s_vae_reverts_alone(f16_device: gpucore.Device, tmp_path: Path) -> None:
    """The other way round: the tiny SD model in float16 whose VAE decoder overflows and a
    hires pass's sound VAE file, both decoding under `reverting` as generate runs a decode:
    the model's VAE is made float32 and named, the hires pass's stays float16 and its
    pictures are diffusers' float32 ones of the latents. (Decodes alone: the denoising adds
    nothing to which VAE is reverted.)"""
    from diffusion.pipelines.module_load import hires_modules

    overflowing, sound = _overflowing_vae(), tiny_vae()
    model = write_pipeline(tmp_path / "model", vae=overflowing)
    pipe = diffusion.load_pipeline(model, dtype="float16", device=f16_device)
    request = SimpleNamespace(refiner=None, hires_modules=hires_modules(
        pipe, model, ("sound",), [_vae_file(sound, tmp_path / "sound.safetensors")]))
    hires_vae = request.hires_modules.vae
    latents = np.random.default_rng(6).standard_normal((1, 4, 8, 8)).astype(np.float32)
    with pytest.warns(VaeRevertWarning, match=r"^the model's VAE \(.+\) gave NaN .*float16 "
                      r"decode .*the other VAEs stay float16") as said:
        own, theirs = reverting(pipe, request, lambda: (pipe._decode(latents),
                                                        pipe._decode(latents, hires_vae)))
    assert len(said) == 1
    assert pipe.vae.decoder.conv_in.weight.dtype == np.float32
    assert request.hires_modules.vae is hires_vae
    assert hires_vae.decoder.conv_in.weight.dtype == np.float16
    for pictures, vae in ((own, overflowing), (theirs, sound)):  # float16: within a level
        expected = _diffusers_pictures(vae, latents)[0]
        assert pictures[0].std() > 10 and np.abs(pictures[0].astype(int) - expected).max() <= 1


class _Holder:
    """A stand-in for a model (or hires modules) holding one VAE that gives NaN in float16."""

    def __init__(self, name: str, vae_path: str | None = None) -> None:
        self.name, self.vae_path, self.vae, self.float16 = name, vae_path, object(), True

    def use_float32_vae(self) -> bool:
        was, self.float16 = self.float16, False
        return was


def test_only_the_vae_that_overflowed_is_reverted() -> None:
    """`reverting` over a run holding three VAEs (the model's, an SDXL refiner's, a hires
    pass's): the refiner's decode NaN reverts the refiner's alone, a hires encode that
    overflows on the next try reverts that one next, each warning naming its VAE, and the
    model's stays float16; a VAE float32 already ends the run naming it; one that none of
    them holds is not theirs to revert."""
    family, refiner = _Holder("base"), _Holder("refiner-xl", "/vae/sdxl_vae.safetensors")
    hires = _Holder("unused", "hr.safetensors")
    request = SimpleNamespace(refiner=refiner, hires_modules=hires)
    nan, inf = np.full((4, 4, 3), np.nan), np.array([np.inf, 1.0])

    def run() -> str:
        if refiner.float16:
            check_decoded(nan, refiner.vae)
        if hires.float16:
            check_encoded(inf, hires.vae)
        return "pictures"

    with pytest.warns(VaeRevertWarning) as said:
        assert reverting(family, request, run) == "pictures"
    assert family.float16 and not refiner.float16 and not hires.float16
    assert [str(w.message).split(" (float16")[0] for w in said] == [
        "the refiner's VAE (refiner-xl, from sdxl_vae.safetensors) gave NaN in 100.0% of its "
        "values in its float16 decode",
        "the hires pass's VAE (from hr.safetensors) gave infinity in 50.0% of its values in "
        "its float16 encode"]
    with pytest.raises(NonFiniteError, match=r"^the VAE's decode gave NaN .*: the refiner's "
                       r"VAE \(refiner-xl, from sdxl_vae.safetensors\) runs in float32 already"):
        reverting(family, request, lambda: check_decoded(nan, refiner.vae))
    with pytest.raises(VaeNonFiniteError, match="--no-half-vae"):
        reverting(family, request, lambda: check_decoded(nan, object()))
    assert family.float16


def test_the_cli_and_the_server_take_it(monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    for command in (["txt2img", "--prompt", "a cat"], ["img2img", "--prompt", "a cat",
                                                       "--init-image", "x.png"], ["serve"]):
        assert parser.parse_args([*command, "--no-half-vae"]).no_half_vae
        assert not parser.parse_args(command).no_half_vae
    made: list[str] = []
    model = SimpleNamespace(name="m", family="sd1", capabilities=SimpleNamespace(turbo=False),
                            use_float32_vae=lambda: made.append("made") or True)
    # the CLI's loading: the model's VAE made float32, the line said
    monkeypatch.setattr(diffusion, "load_pipeline", lambda *args, **kwargs: model)
    monkeypatch.setattr(load_cli, "_dtype_and_device", lambda choice: (np.float16, None))
    load_cli.load_models(parser.parse_args(["txt2img", "--prompt", "a cat", "--no-half-vae"]))
    assert made == ["made"]
    assert "no-half-vae: the VAE runs in float32 (the model keeps its float16 weights)" in (
        capsys.readouterr().err)
    load_cli.load_models(parser.parse_args(["txt2img", "--prompt", "a cat"]))
    assert made == ["made"]  # not without the flag
    # the server's loader applies the setting to every pipeline it loads
    loader = PipelineLoader(ServerSettings(no_half_vae=True), build=lambda path, **where: model)
    assert loader(Path("model")) is model and made == ["made", "made"]


def test_the_cli_says_a_revert_in_one_line(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A revert's warning on the command line: `warning: ...` as its errors are, not Python's
    file:line and source line; the picture's path still printed."""
    def run(args: Any, parser: Any) -> list[str]:
        warnings.warn("the model's VAE (m) gave NaN ... --no-half-vae", VaeRevertWarning,
                      stacklevel=2)
        return ["out.png"]

    monkeypatch.setattr(main_cli, "run", run)
    assert main(["txt2img", "--prompt", "a cat"]) == 0
    out, err = capsys.readouterr()
    assert out == "out.png\n"
    assert err == "warning: the model's VAE (m) gave NaN ... --no-half-vae\n"


def test_a_flow_model_under_a_memory_mode_decodes_by_its_float32_vae(
        f16_device: gpucore.Device, tmp_path: Path) -> None:
    """FLUX.1 (tiny) in float16 under --medvram: use_float32_vae swaps the mode's VAE unit,
    and the model's decode gives diffusers' float32 picture of the latents."""
    from flow_tiny import tiny_flux_pipeline

    reference = tiny_flux_pipeline(tmp_path, dev=True).vae
    model = diffusion.load_pipeline(tmp_path / "flux", dtype="float16", device=f16_device)
    model.set_memory_mode(MemoryMode(medvram=True))
    half = model.pipe.vae
    assert model.use_float32_vae() and not model.use_float32_vae()
    residency = model._memory.residency
    assert model.pipe.vae in residency and half not in residency
    assert model.pipe.vae.decoder.conv_in.weight.dtype == np.float32
    latents = np.random.default_rng(4).standard_normal((1, 4, 9, 7)).astype(np.float32)
    picture = model.decode(latents, SimpleNamespace(hires_modules=None))[0]
    import torch

    with torch.no_grad():  # FLUX's VAE: out of its scaled, shifted latent space
        z = latents / reference.config.scaling_factor + reference.config.shift_factor
        x = reference.decode(torch.from_numpy(z.astype(np.float32))).sample.numpy()[0]
    expected = np.round(np.clip(x / 2 + 0.5, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)
    assert picture.std() > 10 and np.abs(picture.astype(int) - expected).max() <= 1


def test_a_flow_model_s_hires_vae_is_made_float32_too(f16_device: gpucore.Device,
                                                      tmp_path: Path) -> None:
    """FLUX.1 (tiny) in float16 decoding by a hires module's VAE file that overflows, under
    `reverting` as generate runs the decode: the warning, and diffusers' float32 picture by
    that VAE."""
    import torch
    from flow_tiny import tiny_flux_pipeline

    from diffusion.pipelines.module_load import hires_modules

    reference = tiny_flux_pipeline(tmp_path, dev=True).vae
    with torch.no_grad():  # overflowing as _overflowing_vae's
        reference.decoder.conv_in.weight.mul_(3e4)
        reference.decoder.conv_in.bias.mul_(3e4)
        for p in reference.parameters():
            p.copy_(p.half().float())
    file = _vae_file(reference, tmp_path / "ae-overflowing.safetensors")
    model = diffusion.load_pipeline(tmp_path / "flux", dtype="float16", device=f16_device)
    request = SimpleNamespace(hires_modules=hires_modules(model, tmp_path / "flux", ("ae",),
                                                          [file]))
    latents = np.random.default_rng(4).standard_normal((1, 4, 9, 7)).astype(np.float32)
    with pytest.warns(VaeRevertWarning):
        picture = reverting(model, request, lambda: model.decode(latents, request))[0]
    assert request.hires_modules.vae.decoder.conv_in.weight.dtype == np.float32
    with torch.no_grad():  # FLUX's VAE: out of its scaled, shifted latent space
        z = latents / reference.config.scaling_factor + reference.config.shift_factor
        x = reference.decode(torch.from_numpy(z.astype(np.float32))).sample.numpy()[0]
    expected = np.round(np.clip(x / 2 + 0.5, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)
    assert picture.std() > 10 and np.abs(picture.astype(int) - expected).max() <= 1


@pytest.mark.parametrize("kind", ["sd", "flux2", "qwen-image"])
def test_the_float32_copy_keeps_every_weight(first_device: gpucore.Device, kind: str) -> None:
    """Each VAE class the families load (FLUX.2's batch-norm statistics, Qwen-Image's 3D
    kernels included): the copy holds every parameter of the float16 VAE, upcast."""
    from flux2_tiny import FLUX2_VAE_TINY
    from qwenimage_tiny import QWENIMAGE_VAE_TINY
    from sd_tiny import VAE_TINY

    from diffusion.models import AutoencoderKL
    from diffusion.models.qwen_image_vae import AutoencoderKLQwenImage
    from diffusion.models.vae_flux2 import AutoencoderKLFlux2

    cls, config = {"sd": (AutoencoderKL, VAE_TINY), "flux2": (AutoencoderKLFlux2, FLUX2_VAE_TINY),
                   "qwen-image": (AutoencoderKLQwenImage, QWENIMAGE_VAE_TINY)}[kind]
    half = cls(dict(config), dtype=np.float16, device=first_device)
    rng = np.random.default_rng(3)
    half.load_state_dict({k: rng.standard_normal(t.shape).astype(t.dtype)
                          for k, t in half.named_parameters()})
    full = float32_copy(half)
    got, given = full.state_dict(), half.state_dict()
    assert type(full) is cls and got.keys() == given.keys()
    for key, value in given.items():
        assert got[key].dtype == np.float32 and np.array_equal(got[key], value.astype(np.float32))

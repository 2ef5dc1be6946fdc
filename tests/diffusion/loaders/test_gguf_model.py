"""One way to load quantized weights: `python -m diffusion quantize MODEL OUT.gguf` writes the
whole model (UNet, VAE, text encoder, configs) and `txt2img --model OUT.gguf` draws with it
alone, within Q8_0's error of the float model's picture; a UNet-only GGUF runs with --base or
with --vae / --text-encoder files; a damaged .gguf is one error line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gguf", reason="GGUF needs the gguf package (diffusion extra)")
pytest.importorskip("diffusers", reason="the tiny models are built with diffusers")
from PIL import Image
from safetensors.numpy import save_file
from sd_tiny import state_dict, tiny_text_encoder, tiny_vae, write_pipeline

import diffusion.cli.main as cli
import gpucore
from diffusion import load_pipeline
from diffusion.loaders.formats.gguf_file import GGUFFile
from diffusion.pipelines.sd.memory import networks
from gpustd.nn.offload import device_bytes
from gpustd.nn.quantized import quantized_weights

DRAW = ("--width", "32", "--height", "32", "--steps", "3", "--dtype", "float32")
# Q8_0's error in the tiny model's 32x32 picture (lavapipe): the whole model 1.3 / 255 in the
# mean and 9 at most, its UNet alone 1.1 and 7; another seed or prompt is far outside
MEAN_BOUND, MAX_BOUND = 2.5, 16


def _draw(capsys: pytest.CaptureFixture[str] | None, out: Path, *argv: str,
          prompt: str = "a red circle", seed: int = 7) -> np.ndarray:
    code = cli.main(["txt2img", *argv, "--prompt", prompt, "--seed", str(seed), *DRAW,
                     "--out", str(out)])
    err = "" if capsys is None else capsys.readouterr()[1]
    assert code == 0, err
    with Image.open(out) as image:
        return np.asarray(image.convert("RGB"), np.float64)


def _said(err: str) -> list[str]:
    """stderr's lines but the random seed's ("seed: N", printed before the model loads)."""
    return [line for line in err.splitlines() if not line.startswith("seed:")]


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    error = np.abs(a - b)
    return bool(error.mean() <= MEAN_BOUND and error.max() <= MAX_BOUND)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny SD folder and its whole-model Q8_0 GGUF, written by the CLI."""
    root = tmp_path_factory.mktemp("gguf-model")
    folder = write_pipeline(root / "tiny")
    out = root / "tiny-q8_0.gguf"
    assert cli.main(["quantize", str(folder), "--type", "q8_0", str(out)]) == 0
    return folder, out


@pytest.fixture(scope="module")
def float_picture(tiny: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
                  ) -> np.ndarray:
    """The float model's picture, which the whole-model and the UNet-only GGUF are held to
    (drawn once for both)."""
    return _draw(None, tmp_path_factory.mktemp("float") / "float.png", "--model",
                 str(tiny[0]))


def test_whole_model_gguf_draws_alone(first_device: gpucore.Device, tiny: tuple[Path, Path],
                                      float_picture: np.ndarray, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    _, out = tiny
    file = GGUFFile(out)
    assert {k.split(".")[0] for k in file.keys()} == {"unet", "vae", "text_encoder"}
    assert file.format("unet.down_blocks.0.resnets.0.conv1.weight") == "q8_0"
    assert file.format("text_encoder.embeddings.token_embedding.weight") == "f16"
    assert not list(out.parent.glob("*.partial"))
    reference = float_picture
    quantized = _draw(capsys, tmp_path / "q8.png", "--model", str(out))
    assert _close(reference, quantized)
    # loaded for a memory mode (LoadOptions.offload): its Q8_0 blocks and its float tensors
    # go to host memory as they are read, nothing to the GPU
    pipe = load_pipeline(out, device=first_device, offload=True)
    blocks = quantized_weights(pipe.unet)
    assert blocks and not any(block.on_device for block in blocks.values())
    assert not any(device_bytes(network) for network in networks(pipe))
    # the bound tells pictures apart: another seed or prompt is far outside it
    assert not _close(reference, _draw(capsys, tmp_path / "s.png", "--model", str(out), seed=8))
    assert not _close(reference, _draw(capsys, tmp_path / "p.png", "--model", str(out),
                                       prompt="a blue square"))


def test_unet_only_gguf_with_base_or_modules(first_device: gpucore.Device,
                                             tiny: tuple[Path, Path], float_picture: np.ndarray,
                                             tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    folder, _ = tiny
    unet = tmp_path / "unet.gguf"
    assert cli.main(["quantize", str(folder), "--unet-only", str(unet)]) == 0
    assert not any(k.startswith("vae.") for k in GGUFFile(unet).keys())
    # the base's float VAE and text encoder: the float model's picture within Q8_0's error
    expected = float_picture
    with_base = _draw(capsys, tmp_path / "base.png", "--model", str(unet), "--base", str(folder))
    assert _close(expected, with_base)
    # nothing to take the other parts from: one line saying what is missing and how to give it
    assert cli.main(["txt2img", "--model", str(unet), "--prompt", "a", *DRAW,
                     "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert "UNet-only GGUF" in err and "--base" in err and "Traceback" not in err
    assert len(_said(err)) == 1
    # module files: a VAE and a CLIP text encoder (the UNet's config then comes from its
    # shapes: SD 1.x's head count, not the tiny model's, so the picture is another one)
    vae, clip = tmp_path / "vae.safetensors", tmp_path / "clip_l.safetensors"
    save_file(state_dict(tiny_vae()), str(vae))
    save_file(state_dict(tiny_text_encoder()), str(clip))
    drawn = _draw(capsys, tmp_path / "modules.png", "--model", str(unet), "--vae", str(vae),
                  "--text-encoder", str(clip))
    assert drawn.shape == expected.shape and drawn.std() > 0


def test_a_gguf_tells_what_it_takes_before_it_loads(tiny: tuple[Path, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry's Capabilities (families.capabilities_of) of the whole-model GGUF and of
    its UNet alone, from their headers, are the float folder's; the command line refuses
    what the family does not take with them, before a load (a UNet-only file's missing parts
    too)."""
    import diffusion
    from diffusion.pipelines.families import capabilities_of

    folder, whole = tiny
    unet = tmp_path / "unet.gguf"
    assert cli.main(["quantize", str(folder), "--unet-only", str(unet)]) == 0
    told = capabilities_of(folder)
    assert told is not None and capabilities_of(whole) == told == capabilities_of(unet)
    monkeypatch.setattr(diffusion, "load_pipeline", lambda *a, **kw: pytest.fail("it loaded"))
    for model in (whole, unet):
        assert cli.main(["txt2img", "--model", str(model), "--prompt", "a", *DRAW, "--cache",
                         "magcache", "--out", str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.endswith(f"step cache magcache: not supported for {told.family} models; "
                            "leave --cache out"), err


def test_damaged_gguf_is_one_error_line(tiny: tuple[Path, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    _, whole = tiny
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a gguf file at all" * 50)
    for path in (cut, garbage):
        assert cli.main(["txt2img", "--model", str(path), "--prompt", "a", *DRAW,
                         "--out", str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err.strip()
        assert str(path) in err and "Traceback" not in err
        assert len(_said(err)) == 1
    # a whole model has its own text encoder: a file given for one is refused, not ignored
    assert cli.main(["txt2img", "--model", str(whole), "--text-encoder", str(whole),
                     "--prompt", "a", *DRAW, "--out", str(tmp_path / "x.png")]) == 2
    assert "a whole-model GGUF" in capsys.readouterr().err


def test_server_loader_takes_module_files(first_device: gpucore.Device, tiny: tuple[Path, Path],
                                          tmp_path: Path) -> None:
    """The server's loader for a checkpoint with Forge's modules (load_with_modules) gives a
    UNet-only GGUF its VAE and text encoder from them; as a module the GGUF is refused."""
    from diffusion.loaders import WeightsError
    from diffusion.loaders.flow.module_file import module_roles
    from diffusion.pipelines.module_load import load_with_modules
    from gpustd.nn.quantized import quantized_weights

    folder, _ = tiny
    unet = tmp_path / "unet.gguf"
    assert cli.main(["quantize", str(folder), "--unet-only", str(unet)]) == 0
    vae, clip = tmp_path / "vae.safetensors", tmp_path / "clip_l.safetensors"
    save_file(state_dict(tiny_vae()), str(vae))
    save_file(state_dict(tiny_text_encoder()), str(clip))
    pipe = load_with_modules(unet, [clip, vae], device=first_device)
    assert pipe.family == "sd1" and quantized_weights(pipe.unet) and pipe.vae_path == vae
    with pytest.raises(WeightsError, match="give it as the model"):
        module_roles(unet)


def test_sdxl_whole_model_gguf(first_device: gpucore.Device, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    """SDXL's two text encoders (the second with its projection) and its pipeline settings
    travel in the file too: the float model's picture within Q8_0's error."""
    from sdxl_tiny import save_folder, sdxl_pipeline

    folder = save_folder(sdxl_pipeline("base", scratch=tmp_path / "scratch"), tmp_path / "xl")
    out = tmp_path / "xl-q8_0.gguf"
    assert cli.main(["quantize", str(folder), str(out)]) == 0
    assert {k.split(".")[0] for k in GGUFFile(out).keys()} == {
        "unet", "vae", "text_encoder", "text_encoder_2"}
    reference = _draw(capsys, tmp_path / "float.png", "--model", str(folder))
    quantized = _draw(capsys, tmp_path / "q8.png", "--model", str(out))
    assert _close(reference, quantized)
    # loaded for a memory mode (LoadOptions.offload): its Q8_0 blocks and its float tensors
    # go to host memory as they are read, nothing to the GPU
    pipe = load_pipeline(out, device=first_device, offload=True)
    blocks = quantized_weights(pipe.unet)
    assert blocks and not any(block.on_device for block in blocks.values())
    assert not any(device_bytes(network) for network in networks(pipe))

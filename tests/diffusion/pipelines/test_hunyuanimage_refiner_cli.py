"""HunyuanImage 2.1's refiner through the command line (tiny random folders, float32): the
refiner folder told from the base's, the distilled base then the refiner (`--refiner`) against
diffusers' HunyuanImagePipeline then HunyuanImageRefinerPipeline on its picture, the refiner
alone on an init image (img2img) against diffusers' (and under --lowvram, the same picture),
what it refuses in one line, and the refiner's steps told to the observer as a pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_error, cli_ok, png_pixels
from hunyuanimage_parts_tiny import diffusers_picture, tiny_hunyuanimage_pipeline
from hunyuanimage_refiner_tiny import tiny_refiner_pipeline

import gpucore
from diffusion.infotext import read_infotext
from diffusion.pipelines.families import capabilities_of
from diffusion.pipelines.flow.hunyuanimage_refiner_model import REFINER_DEFAULTS
from diffusion.pipelines.load import model_defaults

PROMPT = "a red fox in the snow"
TOL = 0.003  # mean |ours - diffusers| in [0, 1]: the PNG's rounding (see the report)


def _refined(pipe: object, picture: np.ndarray, **settings: object) -> np.ndarray:
    """diffusers' refiner on `picture` (1, H, W, 3) in [0, 1] from seed 7, its prompt limit
    cut to the prompt's own length (the transformer masks the padding)."""
    tokens = len(pipe.tokenizer(pipe.prompt_template_encode.format(PROMPT)).input_ids)
    pipe.tokenizer_max_length = tokens - pipe.prompt_template_encode_start_idx
    with torch.no_grad():
        return pipe(PROMPT, image=picture, height=picture.shape[1], width=picture.shape[2],
                    generator=torch.Generator().manual_seed(7), output_type="np",
                    **settings).images[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object, object]:
    """A folder holding hunyuanimage/ (the distilled base) and refiner/, and diffusers'
    pipelines of the two (made once: about 20 s)."""
    root = tmp_path_factory.mktemp("hunyuanimage-refiner")
    return (root, tiny_hunyuanimage_pipeline(root, distilled=True),
            tiny_refiner_pipeline(root))


def test_base_then_refiner_from_the_cli(first_device: gpucore.Device, tmp_path: Path,
                                        tiny: tuple[Path, object, object],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    root, base, refiner = tiny
    folder, refiner_folder = root / "hunyuanimage", root / "refiner"
    capabilities = capabilities_of(refiner_folder)
    assert capabilities is not None and capabilities.family == "hunyuanimage-2.1-refiner"
    assert model_defaults(refiner_folder)[0] == REFINER_DEFAULTS
    common = ("--width", "48", "--height", "32", "--rng", "torch", "--seed", "7",
              "--dtype", "float32", "--prompt", PROMPT)
    # the base's guidance scale its own: the refiner runs at diffusers' default (3.25)
    out, _ = cli_ok(capsys, "txt2img", "--model", str(folder), "--steps", "2",
                    "--distilled-cfg-scale", "4", "--refiner", str(refiner_folder), *common,
                    "--out", str(tmp_path / "r.png"))
    assert "Refiner: refiner" in (read_infotext(out) or "")
    picture = diffusers_picture(base, PROMPT, height=32, width=48, num_inference_steps=2,
                                distilled_guidance_scale=4.0)
    expected = _refined(refiner, picture, num_inference_steps=4)
    got = png_pixels(out)
    assert np.abs(got - expected).mean() < TOL
    assert np.abs(got - picture[0]).mean() > 10 * TOL  # the refiner changed the picture
    # the refiner alone on an init image: diffusers' on the PNG's pixels
    out, _ = cli_ok(capsys, "img2img", "--model", str(refiner_folder), "--init-image",
                    str(tmp_path / "r.png"), "--distilled-cfg-scale", "2.5", *common,
                    "--out", str(tmp_path / "i.png"))
    expected = _refined(refiner, got[None], num_inference_steps=4,
                        distilled_guidance_scale=2.5)
    assert np.abs(png_pixels(out) - expected).mean() < TOL
    # --lowvram: the blocks stream, the text encoder and the VAE come and go; the same picture
    low, _ = cli_ok(capsys, "img2img", "--model", str(refiner_folder), "--init-image",
                    str(tmp_path / "r.png"), "--distilled-cfg-scale", "2.5", "--lowvram",
                    *common, "--out", str(tmp_path / "low.png"))
    np.testing.assert_array_equal(png_pixels(low), png_pixels(out))
    # refusals, each in one line
    for argv, words in (
            (("txt2img", "--model", str(refiner_folder)), "refines a picture: run img2img"),
            (("txt2img", "--model", str(folder), "--refiner", str(folder)),
             "is not the HunyuanImage 2.1 refiner"),
            (("img2img", "--model", str(refiner_folder), "--init-image", str(tmp_path / "r.png"),
              "--sampler", "Euler"), "choose 'diffusers'")):
        assert words in cli_error(capsys, *argv, *common)


def test_refiner_steps_reach_the_observer(first_device: gpucore.Device,
                                         tiny: tuple[Path, object, object]) -> None:
    """--refiner's steps reach the observer (the CLI's bar, the server's progress and live
    preview) as a pass of their own after the base's: a batch of two pictures refined one
    after another (2 steps each here), counted on, begun with the refiner's decode, which
    draws the latents told: the last step's are the second picture."""
    from dataclasses import replace

    from diffusion.pipelines.load import load_pipeline
    from diffusion.pipelines.observer import Decode, Observer
    from diffusion.pipelines.request import GenerationRequest

    root = tiny[0]
    base, refiner = (load_pipeline(root / name, dtype=np.float32, device=first_device)
                     for name in ("hunyuanimage", "refiner"))
    refiner.defaults = replace(refiner.defaults, steps=2)

    class Seen(Observer):
        def __init__(self) -> None:
            self.told: list[object] = []
            self.decode: Decode | None = None
            self.latents = np.zeros(0)

        def on_begin(self, decode: Decode, latent_space: str = "") -> None:
            self.told.append("begin")
            self.decode = decode

        def on_step(self, done: int, total: int, latents: np.ndarray) -> None:
            self.told.append((done, total))
            self.latents = latents.copy()

    seen = Seen()
    result = base.generate(GenerationRequest(
        prompt=PROMPT, width=48, height=32, steps=2, seed=7, batch_size=2, sampler="diffusers",
        rng="torch", cfg_scale=1.0, distilled_cfg_scale=4.0, refiner=refiner), observer=seen)
    assert seen.told == ["begin", (1, 2), (2, 2), "begin", (1, 4), (2, 4), (3, 4), (4, 4)]
    assert seen.decode is not None and seen.latents.ndim == 4  # (1, C, h, w): a picture's
    preview = np.asarray(seen.decode(seen.latents)[0], np.float64)
    np.testing.assert_array_equal(preview, result.images[1])  # the same decode
    assert np.abs(preview - result.images[0]).mean() > 1  # the other picture: measured 2.0

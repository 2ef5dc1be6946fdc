"""FLUX.1 with ControlNet units (a tiny FLUX dev and a tiny FluxControlNetModel, both made by
diffusers here): through the CLI with `--sampler diffusers --rng torch` the picture is
diffusers' FluxControlNetPipeline's, a Union ControlNet's mode, the weight and guidance end
reach it as diffusers', and the control visibly matters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from control_tiny import circle
from flow_tiny import FLUX_TINY
from PIL import Image
from sd_tiny import CLIP_TINY, randomized

import diffusion.cli.main as cli
import gpucore
from diffusion.pipelines.flow.flow_model import FlowModel

TOLERANCE = 0.01  # mean abs pixel, pictures in [0, 1]
WIDTH, HEIGHT = 48, 32  # latents 24 x 16: 12 x 8 patches, not square
PROMPT = "a red circle"


@pytest.fixture(autouse=True)
def short_prompts(monkeypatch: pytest.MonkeyPatch) -> None:
    """16 T5 tokens (not diffusers' 512): the tiny models' cost is the text length."""
    monkeypatch.setattr(FlowModel, "max_sequence_length", 16)


def tiny_flux_controlnet(folder: Path, *, union: bool, seed: int = 11,
                         scale: float = 1.0) -> Any:
    """diffusers' FluxControlNetModel for flow_tiny's FLUX dev, two double and one single
    block (the transformer's one double block takes the first residual), every weight random
    and large enough that the control shows; saved to `folder`."""
    import diffusers

    config = {**FLUX_TINY, "pooled_projection_dim": CLIP_TINY["hidden_size"], "num_layers": 2,
              "guidance_embeds": True, "num_mode": 7 if union else None}
    model = randomized(diffusers.FluxControlNetModel(**config), seed, scale=scale)
    model.save_pretrained(folder)
    return model


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> np.ndarray:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    with Image.open(out.strip()) as image:
        return np.asarray(image.convert("RGB"), np.float64) / 255


def _reference(reference: Any, controlnet: Any, image: Image.Image, **settings: Any
               ) -> np.ndarray:
    import diffusers

    pipe = diffusers.FluxControlNetPipeline(**reference.components, controlnet=controlnet)
    images = pipe(PROMPT, control_image=image, height=HEIGHT, width=WIDTH,
                  num_inference_steps=4, guidance_scale=2.5, max_sequence_length=16,
                  generator=torch.Generator().manual_seed(7), output_type="np",
                  **settings).images
    return np.round(images[0] * 255) / 255


@pytest.mark.parametrize("union", [False, True], ids=["single", "union"])
def test_flux_controlnet_equals_diffusers(first_device: gpucore.Device,
                                          tiny_flux_dev: tuple[Path, Any], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str],
                                          union: bool) -> None:
    root, reference = tiny_flux_dev
    controlnet = tiny_flux_controlnet(tmp_path / "cn", union=union)
    picture = Image.fromarray(circle(HEIGHT, WIDTH))
    picture.save(tmp_path / "control.png")
    base = ("txt2img", "--model", str(root / "flux"), "--prompt", PROMPT, "--width",
            str(WIDTH), "--height", str(HEIGHT), "--steps", "4", "--sampler", "diffusers",
            "--rng", "torch", "--seed", "7", "--distilled-cfg-scale", "2.5", "--dtype",
            "float32")
    mode = ("--control-union-mode", "2") if union else ()
    unit = ("--controlnet", str(tmp_path / "cn"), "--control-image",
            str(tmp_path / "control.png"), *mode)
    modes = {"control_mode": 2} if union else {}

    ours = _cli(capsys, *base, *unit, "--out", str(tmp_path / "a.png"))
    theirs = _reference(reference, controlnet, picture, **modes)
    assert np.abs(ours - theirs).mean() <= TOLERANCE
    if union:  # the rest is the same path
        return
    plain = _cli(capsys, *base, "--out", str(tmp_path / "plain.png"))
    assert np.abs(ours - plain).mean() >= 10 * TOLERANCE  # the control matters

    ours = _cli(capsys, *base, *unit, "--control-weight", "0.5", "--control-end", "0.25",
                "--out", str(tmp_path / "b.png"))
    theirs_b = _reference(reference, controlnet, picture, controlnet_conditioning_scale=0.5,
                          control_guidance_end=0.25, **modes)
    assert np.abs(ours - theirs_b).mean() <= TOLERANCE
    assert np.abs(theirs_b - theirs).mean() >= 10 * TOLERANCE

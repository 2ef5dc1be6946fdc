"""SD 3 / 3.5 with ControlNet units (flow_tiny's SD3.5-Medium-shaped model and a tiny
SD3ControlNetModel made by diffusers here, in InstantX's form and in Stability's SD 3.5 Large
form): through the CLI with `--sampler diffusers --rng torch` the picture is diffusers'
StableDiffusion3ControlNetPipeline's, with CFG, the weight and guidance end as diffusers', and
the control visibly matters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_picture
from control_tiny import circle
from PIL import Image
from sd_tiny import randomized

import gpucore

pytestmark = pytest.mark.usefixtures("short_prompts")  # 16 T5 tokens (flow_fixtures.py)

TOLERANCE = 0.01  # mean abs pixel, pictures in [0, 1]
WIDTH, HEIGHT = 40, 24  # latents 20 x 12: 10 x 6 patches, not square
PROMPT = "a red circle"


def tiny_sd3_controlnet(folder: Path, transformer: Any, *, stability: bool,
                        scale: float = 1.0) -> Any:
    """diffusers' SD3ControlNetModel for `transformer` (flow_tiny's SD3): one block of
    InstantX's joint form, or two of Stability's image-only form using the transformer's
    position table; every weight random (the zero linears scaled by `scale`); saved to
    `folder`."""
    import diffusers

    config = {key: transformer.config[key] for key in (
        "sample_size", "patch_size", "in_channels", "attention_head_dim",
        "num_attention_heads", "joint_attention_dim", "caption_projection_dim",
        "pooled_projection_dim", "out_channels", "pos_embed_max_size")}
    if stability:
        config.update(num_layers=2, joint_attention_dim=None, use_pos_embed=False,
                      pos_embed_type=None, force_zeros_for_pooled_projection=False)
    else:
        config.update(num_layers=1, qk_norm="rms_norm")
    model = randomized(diffusers.SD3ControlNetModel(**config), 21)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith("controlnet_blocks"):
                parameter.mul_(scale)
    model.save_pretrained(folder)
    return model


def _reference(reference: Any, controlnet: Any, image: Image.Image, **settings: Any
               ) -> np.ndarray:
    """diffusers' picture, the control map's VAE posterior taken at its mean: the pipeline
    draws it from torch's global generator, which no seed of the call sets."""
    import diffusers
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    pipe = diffusers.StableDiffusion3ControlNetPipeline(**reference.components,
                                                        controlnet=controlnet)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DiagonalGaussianDistribution, "sample",
                      lambda self, generator=None: self.mean)
        images = pipe(PROMPT, negative_prompt="", control_image=image, height=HEIGHT,
                      width=WIDTH, num_inference_steps=4, guidance_scale=4.0,
                      max_sequence_length=16, generator=torch.Generator().manual_seed(7),
                      output_type="np", **settings).images
    return np.round(images[0] * 255) / 255


@pytest.mark.parametrize("stability", [False, True], ids=["instantx", "stability"])
def test_sd3_controlnet_equals_diffusers(first_device: gpucore.Device,
                                         tiny_sd3: tuple[Path, Any], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str],
                                         stability: bool) -> None:
    root, reference = tiny_sd3
    controlnet = tiny_sd3_controlnet(tmp_path / "cn", reference.transformer,
                                     stability=stability)
    picture = Image.fromarray(circle(HEIGHT, WIDTH))
    picture.save(tmp_path / "control.png")
    base = ("txt2img", "--model", str(root / "sd3"), "--prompt", PROMPT, "--width",
            str(WIDTH), "--height", str(HEIGHT), "--steps", "4", "--cfg-scale", "4",
            "--sampler", "diffusers", "--rng", "torch", "--seed", "7", "--dtype", "float32")
    unit = ("--controlnet", str(tmp_path / "cn"), "--control-image",
            str(tmp_path / "control.png"))

    ours = cli_picture(capsys, *base, *unit, "--out", str(tmp_path / "a.png"))
    theirs = _reference(reference, controlnet, picture)
    assert np.abs(ours - theirs).mean() <= TOLERANCE
    plain = cli_picture(capsys, *base, "--out", str(tmp_path / "plain.png"))
    assert np.abs(ours - plain).mean() >= 10 * TOLERANCE  # the control matters

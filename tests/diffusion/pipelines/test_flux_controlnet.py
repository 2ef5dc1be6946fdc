"""FLUX.1 with ControlNet units (a tiny FLUX dev and tiny FluxControlNetModels, all made by
diffusers here): through the CLI with `--sampler diffusers --rng torch` the picture is
diffusers' FluxControlNetPipeline's, a Union ControlNet's mode, the weight and guidance end
reach it as diffusers', several units are its FluxMultiControlNetModel, and the control
visibly matters; through the server the unit's fields reach the picture."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_picture
from control_tiny import circle
from flow_tiny import FLUX_TINY
from PIL import Image
from sd_tiny import CLIP_TINY, randomized

import diffusion.cli.main as cli
import gpucore

pytestmark = pytest.mark.usefixtures("short_prompts")  # 16 T5 tokens (flow_fixtures.py)

TOLERANCE = 0.01  # mean abs pixel, pictures in [0, 1]
WIDTH, HEIGHT = 48, 32  # latents 24 x 16: 12 x 8 patches, not square
PROMPT = "a red circle"


def tiny_flux_controlnet(folder: Path, *, union: bool, seed: int = 11,
                         scale: float = 0.3) -> Any:
    """diffusers' FluxControlNetModel for flow_tiny's FLUX dev, two double and one single
    block (the transformer's one double block takes the first residual), every weight random
    (the zero linears scaled by `scale`); saved to `folder`."""
    import diffusers

    config = {**FLUX_TINY, "pooled_projection_dim": CLIP_TINY["hidden_size"], "num_layers": 2,
              "guidance_embeds": True, "num_mode": 7 if union else None}
    model = randomized(diffusers.FluxControlNetModel(**config), seed)
    with torch.no_grad():  # residuals about as large as the transformer's image tokens
        for name, parameter in model.named_parameters():
            if name.startswith(("controlnet_blocks", "controlnet_single_blocks")):
                parameter.mul_(scale)
    model.save_pretrained(folder)
    return model


def _base(root: Path) -> tuple[str, ...]:
    return ("txt2img", "--model", str(root / "flux"), "--prompt", PROMPT, "--width", str(WIDTH),
            "--height", str(HEIGHT), "--steps", "4", "--sampler", "diffusers", "--rng", "torch",
            "--seed", "7", "--distilled-cfg-scale", "2.5", "--dtype", "float32")


def _reference(reference: Any, controlnet: Any, image: Any, **settings: Any) -> np.ndarray:
    import diffusers

    pipe = diffusers.FluxControlNetPipeline(**reference.components, controlnet=controlnet)
    images = pipe(PROMPT, control_image=image, height=HEIGHT, width=WIDTH,
                  num_inference_steps=4, guidance_scale=2.5, max_sequence_length=16,
                  generator=torch.Generator().manual_seed(7), output_type="np",
                  **settings).images
    return np.round(images[0] * 255) / 255


def test_flux_controlnet_equals_diffusers(first_device: gpucore.Device,
                                          tiny_flux_dev: tuple[Path, Any], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """One unit: diffusers' picture, unlike the one without it; a weight and an end of its
    own: diffusers' picture for them, unlike the first."""
    root, reference = tiny_flux_dev
    controlnet = tiny_flux_controlnet(tmp_path / "cn", union=False)
    picture = Image.fromarray(circle(HEIGHT, WIDTH))
    picture.save(tmp_path / "control.png")
    unit = ("--controlnet", str(tmp_path / "cn"), "--control-image",
            str(tmp_path / "control.png"))

    ours = cli_picture(capsys, *_base(root), *unit, "--out", str(tmp_path / "a.png"))
    theirs = _reference(reference, controlnet, picture)
    assert np.abs(ours - theirs).mean() <= TOLERANCE
    plain = cli_picture(capsys, *_base(root), "--out", str(tmp_path / "plain.png"))
    assert np.abs(ours - plain).mean() >= 10 * TOLERANCE  # the control matters

    ours = cli_picture(capsys, *_base(root), *unit, "--control-weight", "0.5", "--control-end",
                       "0.25", "--out", str(tmp_path / "b.png"))
    theirs_b = _reference(reference, controlnet, picture, controlnet_conditioning_scale=0.5,
                          control_guidance_end=0.25)
    assert np.abs(ours - theirs_b).mean() <= TOLERANCE
    assert np.abs(theirs_b - theirs).mean() >= 10 * TOLERANCE


def test_union_and_single_controlnets_at_once(first_device: gpucore.Device,
                                              tiny_flux_dev: tuple[Path, Any], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A Union ControlNet with its mode and a single one, each with its map and weight: the
    picture of diffusers' FluxMultiControlNetModel of the two (the mode, given once, reaches
    the Union model only)."""
    import diffusers

    root, reference = tiny_flux_dev
    union = tiny_flux_controlnet(tmp_path / "union", union=True)
    single = tiny_flux_controlnet(tmp_path / "single", union=False, seed=12)
    pictures = [Image.fromarray(circle(HEIGHT, WIDTH)),
                Image.fromarray(np.ascontiguousarray(circle(HEIGHT, WIDTH, seed=3)[::-1]))]
    for index, picture in enumerate(pictures):
        picture.save(tmp_path / f"control{index}.png")
    ours = cli_picture(capsys, *_base(root), "--controlnet", str(tmp_path / "union"),
                       "--control-image", str(tmp_path / "control0.png"), "--controlnet",
                       str(tmp_path / "single"), "--control-image", str(tmp_path / "control1.png"),
                       "--control-union-mode", "2", "--control-weight", "0.8", "0.6",
                       "--out", str(tmp_path / "a.png"))
    theirs = _reference(reference, diffusers.FluxMultiControlNetModel([union, single]),
                        pictures, control_mode=[2, None],
                        controlnet_conditioning_scale=[0.8, 0.6])
    assert np.abs(ours - theirs).mean() <= TOLERANCE


def test_flux_controlnet_unit_through_the_server(first_device: gpucore.Device,
                                                 tiny_flux_dev: tuple[Path, Any],
                                                 tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The extension's unit on txt2img with a FLUX model (a WebUI sampler), its model a
    single .safetensors in the ControlNet folder with its config beside it: its weight,
    guidance start/end and mode give the CLI's picture of the same unit, and the weight
    changes it; the infotext carries the unit; a UNet ControlNet's kind of control mode on
    FLUX is a 422 naming the unit."""
    pytest.importorskip("fastapi", reason="the server extra is not installed")
    from fastapi.testclient import TestClient
    from server_support import CachedLoader, info, pixels, png_b64

    from diffusion.server import create_app

    root = tiny_flux_dev[0]
    tiny_flux_controlnet(tmp_path / "union", union=True)
    (tmp_path / "ControlNet").mkdir()
    shutil.copy(tmp_path / "union" / "diffusion_pytorch_model.safetensors",
                tmp_path / "ControlNet" / "flux_union.safetensors")
    shutil.copy(tmp_path / "union" / "config.json", tmp_path / "ControlNet" / "flux_union.json")
    picture = Image.fromarray(circle(HEIGHT, WIDTH))
    picture.save(tmp_path / "control.png")
    size = {"width": WIDTH, "height": HEIGHT, "steps": 4, "seed": 5, "sampler_name": "Euler",
            "prompt": PROMPT, "distilled_cfg_scale": 2.5}
    unit = {"enabled": True, "image": png_b64(picture), "model": "flux_union",
            "union_mode": 2, "weight": 0.3, "guidance_start": 0.25, "guidance_end": 0.75}
    app = create_app(model=root / "flux", outputs=tmp_path / "outputs", max_size=256,
                     controlnet_dir=tmp_path / "ControlNet", loader=CachedLoader())
    with TestClient(app) as client:
        def txt2img(**changed: Any) -> Any:
            return client.post("/sdapi/v1/txt2img", json={**size, "alwayson_scripts": {
                "controlnet": {"args": [{**unit, **changed}]}}})

        response = txt2img()
        assert response.status_code == 200, response.text
        served = pixels(response.json()["images"][0]) / 255
        assert 'ControlNet 0: "Module: none, Model: flux_union [' in info(response)["infotexts"][0]
        stronger = pixels(txt2img(weight=2).json()["images"][0]) / 255
        refused = txt2img(control_mode="ControlNet is more important")
    assert refused.status_code == 422 and "control unit 0" in refused.text
    assert np.abs(served - stronger).mean() >= 3 * TOLERANCE  # the weight reaches it
    ours = cli_picture(capsys, "txt2img", "--model", str(root / "flux"), "--prompt", PROMPT,
                       "--width", str(WIDTH), "--height", str(HEIGHT), "--steps", "4",
                       "--seed", "5", "--sampler", "Euler", "--distilled-cfg-scale", "2.5",
                       "--controlnet", str(tmp_path / "ControlNet" / "flux_union.safetensors"),
                       "--control-image", str(tmp_path / "control.png"),
                       "--control-union-mode", "2", "--control-weight", "0.3",
                       "--control-start", "0.25", "--control-end", "0.75",
                       "--out", str(tmp_path / "cli.png"))
    assert np.abs(served - ours).max() <= 1 / 255  # start, end, mode and weight too


def test_families_without_controlnets_refuse_units(first_device: gpucore.Device,
                                                   tiny_chroma: tuple[Path, Any],
                                                   tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Chroma (and every flow family but FLUX.1 and SD 3/3.5) says in one line that it takes
    no units yet, before any work."""
    tiny_flux_controlnet(tmp_path / "cn", union=False)
    Image.fromarray(circle(HEIGHT, WIDTH)).save(tmp_path / "control.png")
    code = cli.main(["txt2img", "--model", str(tiny_chroma[0] / "chroma"), "--prompt", PROMPT,
                     "--width", str(WIDTH), "--height", str(HEIGHT), "--steps", "1",
                     "--controlnet", str(tmp_path / "cn"), "--control-image",
                     str(tmp_path / "control.png")])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    assert "ControlNet units: not supported for flow-matching models yet" in err
    from diffusion.pipelines.flow.flow_control import FlowControl

    with pytest.raises(ValueError, match="not supported for chroma models yet"):
        FlowControl([], total_steps=4, family="chroma")


def test_controlnets_of_another_model_are_refused(first_device: gpucore.Device) -> None:
    """A FLUX ControlNet on SD3 or on a UNet model, an SD3 one on FLUX, and the UNet
    ControlNets' soft control modes: one line each naming the unit, before any step."""
    from types import SimpleNamespace

    from diffusion.models.flux_controlnet import FluxControlNetModel
    from diffusion.models.sd3_controlnet import SD3ControlNetModel
    from diffusion.pipelines.control import ControlUnit, check_base
    from diffusion.pipelines.flow.flow_control import FlowControl

    flux = FluxControlNetModel({**FLUX_TINY, "num_single_layers": 0}, device=first_device)
    sd3 = SD3ControlNetModel(dict(num_layers=1, attention_head_dim=8, num_attention_heads=2,
                                  joint_attention_dim=None, caption_projection_dim=16,
                                  use_pos_embed=False), device=first_device)
    image = circle(HEIGHT, WIDTH)
    with pytest.raises(ValueError, match=r"control unit 0: SD 3/3\.5 models take a "
                                         "SD3ControlNetModel, not a FluxControlNetModel"):
        FlowControl([ControlUnit(flux, image)], total_steps=4, family="sd3")
    with pytest.raises(ValueError, match=r"FLUX\.1 models take a FluxControlNetModel, not a "
                                         "SD3ControlNetModel"):
        FlowControl([ControlUnit(sd3, image)], total_steps=4, family="flux-dev")
    with pytest.raises(ValueError, match="control mode 'My prompt is more important' is for "
                                         "UNet models"):
        FlowControl([ControlUnit(flux, image, control_mode="My prompt is more important")],
                    total_steps=4, family="flux-schnell")
    unet = SimpleNamespace(uses_added_cond=False, config={"cross_attention_dim": 768})
    with pytest.raises(ValueError, match=r"the FluxControlNetModel is made for FLUX\.1, but "
                                         r"the model is SD 1\.x/2\.x"):
        check_base([ControlUnit(flux, image)], unet)

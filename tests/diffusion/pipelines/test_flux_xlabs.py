"""XLabs' FLUX ControlNets (x-flux's ControlNetFlux files: BFL names, an input hint block on
the control picture): loaded from such a file, the velocity of the FLUX transformer with its
residuals equals a torch reference written from x-flux's code (its residuals repeated over
the double blocks as x-flux's Flux adds them, times the control scale); through the CLI the
control changes the picture, and the server's unit gives the CLI's picture."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import diffusers
import torch
from cli_support import cli_picture
from control_tiny import circle
from flow_tiny import FLUX_TINY
from PIL import Image
from safetensors.torch import save_file
from sd_tiny import CLIP_TINY, randomized, state_dict
from support import assert_close
from xflux_reference import ControlNetFlux, randomized_xflux

import gpucore
import gpustd
from diffusion.loaders.control.catalog import load_control_model
from diffusion.models import FluxTransformer2DModel
from diffusion.models.flux_controlnet import FluxControlNetModel
from diffusion.pipelines.control import ControlUnit
from diffusion.pipelines.flow.flow_control import FlowControl
from diffusion.pipelines.flow.flux import image_ids

pytestmark = pytest.mark.usefixtures("short_prompts")  # 16 T5 tokens (flow_fixtures.py)

TOL = 3e-4  # f32 end to end, support.assert_close's rule (as the FLUX transformer's test)
PROMPT = "a red circle"
WIDTH, HEIGHT = 48, 32


def xlabs_file(folder: Path, name: str, *, seed: int = 13, residual_scale: float = 1.0) -> Any:
    """An x-flux ControlNet for flow_tiny's FLUX dev saved as an XLabs file `name` in
    `folder`, its config (the tiny rotary axes) beside it; returns the torch model."""
    model = randomized_xflux(ControlNetFlux(
        in_channels=FLUX_TINY["in_channels"], vec_in_dim=CLIP_TINY["hidden_size"],
        context_in_dim=FLUX_TINY["joint_attention_dim"],
        hidden_size=FLUX_TINY["attention_head_dim"] * FLUX_TINY["num_attention_heads"],
        num_heads=FLUX_TINY["num_attention_heads"], axes_dim=FLUX_TINY["axes_dims_rope"],
        guidance_embed=True), seed, residual_scale=residual_scale)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              folder / f"{name}.safetensors")
    (folder / f"{name}.json").write_text(json.dumps(
        {"_class_name": "FluxControlNetModel", "axes_dims_rope": FLUX_TINY["axes_dims_rope"]}))
    return model


def test_xlabs_velocity_equals_xflux(first_device: gpucore.Device, tmp_path: Path) -> None:
    """Three double blocks, two residuals: block i takes residual i mod 2 (not diffusers'
    i // 2 for InstantX's), times the weight; the control picture matters."""
    device = first_device
    reference = xlabs_file(tmp_path, "xlabs", residual_scale=6.0)
    controlnet = load_control_model(tmp_path / "xlabs.safetensors", device=device)
    assert isinstance(controlnet, FluxControlNetModel) and controlnet.takes_pixels
    transformer = randomized(diffusers.FluxTransformer2DModel(
        **{**FLUX_TINY, "num_layers": 3, "pooled_projection_dim": CLIP_TINY["hidden_size"]},
        guidance_embeds=True), 7)
    ours = FluxTransformer2DModel(dict(transformer.config), device=device)
    ours.load_state_dict(state_dict(transformer))

    rng = np.random.default_rng(4)
    rows, columns = 3, 5  # image tokens: a 48 x 80 picture with FLUX's 8x VAE
    latents = rng.standard_normal((1, rows * columns, 16)).astype(np.float32)
    text = rng.standard_normal((1, 7, 32)).astype(np.float32)
    pooled = rng.standard_normal((1, 32)).astype(np.float32)
    t, guidance = np.array([0.7], np.float32), np.array([3.5], np.float32)
    picture = rng.random((1, 3, 16 * rows, 16 * columns)).astype(np.float32)
    img_ids, txt_ids = image_ids(rows, columns), np.zeros((7, 3), np.float32)

    def expected(control: np.ndarray | None, weight: float, repeat: bool = True) -> np.ndarray:
        tensors = [torch.from_numpy(a) for a in (latents, text, pooled, t, guidance)]
        with torch.no_grad():
            samples = None if control is None else [s * weight for s in reference(
                tensors[0], torch.from_numpy(img_ids)[None], torch.from_numpy(control * 2 - 1),
                tensors[1], torch.from_numpy(txt_ids)[None], tensors[3], tensors[2],
                tensors[4])]
            return transformer(tensors[0], tensors[1], tensors[2], tensors[3],
                               torch.from_numpy(img_ids), torch.from_numpy(txt_ids), tensors[4],
                               controlnet_block_samples=samples,
                               controlnet_blocks_repeat=repeat).sample.numpy()

    def got(control: np.ndarray, weight: float) -> np.ndarray:
        flow = FlowControl([ControlUnit(controlnet, control, weight=weight)], total_steps=1,
                           family="flux-dev")
        flow.encode(SimpleNamespace(config={"block_out_channels": (8,) * 4}), batch=1,
                    width=16 * columns, height=16 * rows, generator=None, pack=None,
                    dtype=np.float32, device=device)
        x, states, vector = (gpustd.asarray(a, device=device) for a in (latents, text, pooled))
        residuals = flow.residuals(x, states, vector, t, img_ids=img_ids, guidance_scale=3.5,
                                   blocks=3)
        return ours(x, states, vector, t, img_ids, txt_ids, guidance,
                    control=residuals).numpy()

    theirs = expected(picture, 0.8)
    assert_close(got(picture, 0.8), theirs, tol=TOL)
    visible = 0.03 * np.abs(theirs).mean()  # 1000x the tolerance
    for changed in (expected(np.ascontiguousarray(picture[:, :, ::-1]), 0.8),
                    expected(None, 0.8), expected(picture, 0.8, repeat=False)):
        assert np.abs(changed - theirs).mean() > visible


def test_xlabs_file_through_cli_and_server(first_device: gpucore.Device,
                                           tiny_flux_dev: tuple[Path, Any], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """`--controlnet FILE` with an XLabs file changes the picture; the extension's unit
    naming it in `--controlnet-dir` gives the CLI's picture and its infotext."""
    pytest.importorskip("fastapi", reason="the server extra is not installed")
    from fastapi.testclient import TestClient
    from server_support import CachedLoader, info, pixels, png_b64

    from diffusion.server import create_app

    root = tiny_flux_dev[0]
    xlabs_file(tmp_path / "ControlNet", "flux-canny-controlnet-v3", residual_scale=2.0)
    picture = Image.fromarray(circle(HEIGHT, WIDTH))
    picture.save(tmp_path / "control.png")
    base = ("txt2img", "--model", str(root / "flux"), "--prompt", PROMPT, "--width",
            str(WIDTH), "--height", str(HEIGHT), "--steps", "2", "--seed", "5",
            "--sampler", "Euler", "--distilled-cfg-scale", "2.5")
    ours = cli_picture(capsys, *base, "--controlnet",
                       str(tmp_path / "ControlNet" / "flux-canny-controlnet-v3.safetensors"),
                       "--control-image", str(tmp_path / "control.png"), "--control-weight", "0.7",
                       "--out", str(tmp_path / "cli.png"))
    plain = cli_picture(capsys, *base, "--out", str(tmp_path / "plain.png"))
    assert np.abs(ours - plain).mean() >= 0.02  # the control matters

    app = create_app(model=root / "flux", outputs=tmp_path / "outputs", max_size=256,
                     controlnet_dir=tmp_path / "ControlNet", loader=CachedLoader())
    with TestClient(app) as client:
        response = client.post("/sdapi/v1/txt2img", json={
            "prompt": PROMPT, "width": WIDTH, "height": HEIGHT, "steps": 2, "seed": 5,
            "sampler_name": "Euler", "distilled_cfg_scale": 2.5, "alwayson_scripts": {
                "controlnet": {"args": [{"enabled": True, "image": png_b64(picture),
                                         "model": "flux-canny-controlnet-v3",
                                         "weight": 0.7}]}}})
    assert response.status_code == 200, response.text
    served = pixels(response.json()["images"][0]) / 255
    assert "Model: flux-canny-controlnet-v3 [" in info(response)["infotexts"][0]
    assert np.abs(served - ours).max() <= 1 / 255

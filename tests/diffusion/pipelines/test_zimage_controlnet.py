"""Z-Image with ControlNet units (zimage_tiny's model and tiny ZImageControlNetModels made by
diffusers here, in the forms of alibaba-pai's Fun Union 1.0, 2.0 and 2.1): through the CLI
with `--sampler diffusers --rng torch` the picture is diffusers' ZImageControlNetPipeline's
(with CFG and the unit's weight), and the control visibly matters, as it is through the
server's ControlNet unit with a WebUI sampler; alibaba-pai's single files are told apart by
their tensors, as diffusers' `from_single_file` tells them; the memory modes keep the
picture."""

from __future__ import annotations

import base64
import io
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
from safetensors.torch import save_file
from sd_tiny import randomized
from zimage_tiny import ZIMAGE_TINY, tiny_zimage_pipeline

import gpucore
from diffusion.loaders.control.controlnet_file import controlnet_weights
from diffusion.loaders.control.dit_controlnet_file import zimage_controlnet_config

TOLERANCE = 0.01  # mean abs pixel, pictures in [0, 1]
WIDTH, HEIGHT = 24, 16  # latents 12 x 8: 6 x 4 patches, padded to 32 tokens
PROMPT = "a red circle"
# add_control_noise_refiner of Fun Union 1.0, 2.0 and 2.1
FORMS = {"1.0": None, "2.0": "control_layers", "2.1": "control_noise_refiner"}


@pytest.fixture(scope="module")
def tiny_zimage(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    root = tmp_path_factory.mktemp("tiny-z-image-cn")
    return root / "z-image-turbo", tiny_zimage_pipeline(root)


def tiny_zimage_controlnet(form: str, scale: float = 3.0) -> Any:
    """diffusers' ZImageControlNetModel for zimage_tiny's transformer in Fun Union `form`:
    control blocks after both joint blocks, 2.x reading the map's 4 latent channels and 3
    zero ones; every weight random, the residual projections scaled by `scale` so the map
    visibly matters."""
    import diffusers

    mode = FORMS[form]
    config = {key: ZIMAGE_TINY[key] for key in (
        "all_patch_size", "all_f_patch_size", "dim", "n_refiner_layers", "n_heads",
        "n_kv_heads", "norm_eps", "qk_norm")}
    model = randomized(diffusers.ZImageControlNetModel(
        **config, control_layers_places=[0, 1], add_control_noise_refiner=mode,
        control_refiner_layers_places=None if mode is None else [0],
        control_in_dim=4 if mode is None else 7), 23, scale=0.3)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "after_proj" in name:
                parameter.mul_(scale)
    return model


def _reference(reference: Any, controlnet: Any, image: Image.Image, **settings: Any
               ) -> np.ndarray:
    import diffusers

    pipe = diffusers.ZImageControlNetPipeline(**reference.components, controlnet=controlnet)
    images = pipe(PROMPT, control_image=image, height=HEIGHT, width=WIDTH,
                  num_inference_steps=2, generator=torch.Generator().manual_seed(7),
                  output_type="np", **settings).images
    return np.round(images[0] * 255) / 255


def _base(folder: Path, out: Path) -> tuple[str, ...]:
    return ("txt2img", "--model", str(folder), "--prompt", PROMPT, "--width", str(WIDTH),
            "--height", str(HEIGHT), "--steps", "2", "--sampler", "diffusers", "--rng",
            "torch", "--seed", "7", "--dtype", "float32", "--out", str(out))


@pytest.mark.parametrize("form", ["1.0", "2.0", "2.1"])
def test_zimage_controlnet_equals_diffusers(first_device: gpucore.Device,
                                            tiny_zimage: tuple[Path, Any], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str],
                                            form: str) -> None:
    """Diffusers folders (1.0 with CFG, 2.0) and alibaba-pai's single file (2.1, its config
    beside it: the tiny model's places are not Z-Image's), weight 0.75."""
    folder, reference = tiny_zimage
    controlnet = tiny_zimage_controlnet(form)
    if form != "2.1":
        controlnet.save_pretrained(tmp_path / "cn")
        model = tmp_path / "cn"
    else:
        model = tmp_path / "fun-union-2.1.safetensors"
        save_file({k: v.contiguous() for k, v in controlnet.state_dict().items()}, model)
        controlnet.save_config(tmp_path)
        (tmp_path / "config.json").rename(model.with_suffix(".json"))
    picture = Image.fromarray(circle(HEIGHT, WIDTH))
    picture.save(tmp_path / "control.png")
    guided = ("--cfg-scale", "2.5", "--negative-prompt", "a cat") if form == "1.0" else ()
    unit = ("--controlnet", str(model), "--control-image", str(tmp_path / "control.png"),
            "--control-weight", "0.75")

    ours = cli_picture(capsys, *_base(folder, tmp_path / "a.png"), *guided, *unit)
    settings = {"guidance_scale": 1.5, "negative_prompt": "a cat"} if guided else {
        "guidance_scale": 0.0}
    theirs = _reference(reference, controlnet, picture, controlnet_conditioning_scale=0.75,
                        **settings)
    assert np.abs(ours - theirs).mean() <= TOLERANCE
    if form == "1.0":
        plain = cli_picture(capsys, *_base(folder, tmp_path / "plain.png"), *guided)
        assert np.abs(ours - plain).mean() >= 5 * TOLERANCE  # the control matters


class _Ref:
    """A tensor's shape, as the config reader sees a file's tensors."""

    def __init__(self, *shape: int) -> None:
        self.shape = shape


@pytest.mark.nodevice
def test_fun_union_files_told_apart(tmp_path: Path) -> None:
    """alibaba-pai's files by their tensors, as diffusers' from_single_file reads them: 1.0's
    6 control blocks after every fifth joint block, 2.0's 15 (its zero refiner control
    blocks dropped), 2.1's 15 with its own refiner control blocks."""
    def refs(blocks: int, in_dim: int, refiner: str | None) -> dict[str, Any]:
        found: dict[str, Any] = {"control_all_x_embedder.2-1.weight": _Ref(3840, 4 * in_dim)}
        for i in range(blocks):
            found[f"control_layers.{i}.attention.norm_q.weight"] = _Ref(128)
        for i in range(2):
            found[f"control_noise_refiner.{i}.attention.to_q.weight"] = _Ref(3840, 3840)
        return found

    one = zimage_controlnet_config(refs(6, 16, None), "one")
    assert one["control_layers_places"] == [0, 5, 10, 15, 20, 25]
    assert (one["add_control_noise_refiner"], one["control_in_dim"], one["n_heads"]) == (
        None, 16, 30)
    two = zimage_controlnet_config(refs(15, 33, None), "two")
    assert two["control_layers_places"] == list(range(0, 30, 2))
    assert (two["add_control_noise_refiner"], two["control_refiner_layers_places"]) == (
        "control_layers", [0, 1])

    # a file's refiner control blocks: 2.1's when their before_proj is not zero; under 2.0's
    # config (its are zero) they are dropped, as diffusers drops them
    controlnet = tiny_zimage_controlnet("2.1")
    save_file({k: v.contiguous() for k, v in controlnet.state_dict().items()},
              tmp_path / "fun.safetensors")
    config = controlnet_weights(tmp_path / "fun.safetensors").config
    assert config["add_control_noise_refiner"] == "control_noise_refiner"
    assert config["control_in_dim"] == 7 and config["n_refiner_layers"] == 1
    weights = controlnet_weights(tmp_path / "fun.safetensors", config={
        **config, "add_control_noise_refiner": "control_layers"})
    assert not [k for k in weights if k.startswith("control_noise_refiner.")]


def test_zimage_controlnets_elsewhere_are_refused(first_device: gpucore.Device) -> None:
    """A Z-Image ControlNet on FLUX.1 or a UNet model, a FLUX one on Z-Image: one line each
    naming the unit, before any step."""
    from types import SimpleNamespace

    from diffusion.models.flux_controlnet import FluxControlNetModel
    from diffusion.models.z_image_controlnet import ZImageControlNetModel
    from diffusion.pipelines.control import ControlUnit, check_base
    from diffusion.pipelines.flow.flow_control import FlowControl

    config = {key: ZIMAGE_TINY[key] for key in ("dim", "n_refiner_layers", "n_heads",
                                                "n_kv_heads")}
    zimage = ZImageControlNetModel({**config, "control_layers_places": [0],
                                    "control_in_dim": 4}, device=first_device)
    flux = FluxControlNetModel({**FLUX_TINY, "num_single_layers": 0}, device=first_device)
    image = circle(HEIGHT, WIDTH)
    with pytest.raises(ValueError, match=r"control unit 0: FLUX\.1 models take a "
                                         "FluxControlNetModel, not a ZImageControlNetModel"):
        FlowControl([ControlUnit(zimage, image)], total_steps=4, family="flux-dev")
    with pytest.raises(ValueError, match="Z-Image models take a ZImageControlNetModel, not a "
                                         "FluxControlNetModel"):
        FlowControl([ControlUnit(flux, image)], total_steps=4, family="z-image")
    unet = SimpleNamespace(uses_added_cond=False, config={"cross_attention_dim": 768})
    with pytest.raises(ValueError, match=r"the ZImageControlNetModel is made for Z-Image, but "
                                         r"the model is SD 1\.x/2\.x"):
        check_base([ControlUnit(zimage, image)], unet)
    with pytest.raises(ValueError, match=r"control_layers_places \[1\] must hold 0"):
        ZImageControlNetModel({**config, "control_layers_places": [1], "control_in_dim": 4},
                              device=first_device)


def test_zimage_controlnet_through_the_api(first_device: gpucore.Device,
                                           tiny_zimage: tuple[Path, Any],
                                           tmp_path: Path) -> None:
    """The ControlNet extension's unit names a Z-Image ControlNet of `--controlnet-dir`; with
    Euler over the Simple schedule and the CPU noise source (diffusers' schedule and step),
    the picture is ZImageControlNetPipeline's, the unit in its infotext."""
    pytest.importorskip("fastapi", reason="the server extra is not installed")
    from fastapi.testclient import TestClient
    from server_support import CachedLoader, info, png_b64

    from diffusion.server import create_app

    folder, reference = tiny_zimage
    controlnet = tiny_zimage_controlnet("1.0")
    controlnet.save_pretrained(tmp_path / "controlnets" / "fun-union")
    picture = Image.fromarray(circle(HEIGHT, WIDTH))
    app = create_app(model=folder, controlnet_dir=tmp_path / "controlnets",
                     outputs=tmp_path / "outputs", max_size=256, loader=CachedLoader())
    with TestClient(app) as client:
        response = client.post("/sdapi/v1/txt2img", json={
            "prompt": PROMPT, "sampler_name": "Euler", "cfg_scale": 1, "width": WIDTH,
            "height": HEIGHT, "steps": 2, "seed": 7, "override_settings": {"randn_source": "CPU"},
            "alwayson_scripts": {"controlnet": {"args": [{
                "enabled": True, "image": png_b64(picture), "module": "none",
                "model": "fun-union", "weight": 0.75}]}}})
    assert response.status_code == 200, response.text
    assert 'ControlNet 0: "Module: none, Model: fun-union [' in info(response)["infotexts"][0]
    with Image.open(io.BytesIO(base64.b64decode(response.json()["images"][0]))) as image:
        ours = np.asarray(image.convert("RGB"), np.float64) / 255
    theirs = _reference(reference, controlnet, picture, controlnet_conditioning_scale=0.75,
                        guidance_scale=0.0)
    assert np.abs(ours - theirs).mean() <= TOLERANCE


def test_zimage_controlnet_under_the_memory_modes(first_device: gpucore.Device,
                                                  tiny_zimage: tuple[Path, Any],
                                                  tmp_path: Path) -> None:
    """A Fun Union 2.1 unit (its blocks run inside the transformer's call and run its noise
    refiner) under --lowvram and --medvram: the plain picture bitwise, at most one block on
    the GPU under --lowvram (test_flow_control_memory's checks)."""
    from test_flow_control_memory import check_units_under_the_memory_modes

    from diffusion.loaders.control.catalog import load_control_model
    from diffusion.pipelines.control import ControlUnit
    from diffusion.pipelines.load import load_pipeline
    from diffusion.pipelines.request import GenerationRequest

    tiny_zimage_controlnet("2.1").save_pretrained(tmp_path / "cn")
    model = load_pipeline(tiny_zimage[0], device=first_device, offload=True)
    controlnet = load_control_model(tmp_path / "cn", device=first_device)
    request = GenerationRequest(prompt=PROMPT, width=WIDTH, height=HEIGHT, steps=2, seed=7,
                                sampler="diffusers", rng="torch", cfg_scale=1.0,
                                control=(ControlUnit(controlnet, circle(HEIGHT, WIDTH)),))
    check_units_under_the_memory_modes(model, controlnet, request)

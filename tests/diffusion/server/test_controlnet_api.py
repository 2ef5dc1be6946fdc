"""The ControlNet extension's API on our server: `alwayson_scripts` units from the real
`webuiapi` client (two units, the same image twice, the units in the infotext), the
`/controlnet/*` routes, an IP-Adapter unit giving the Python API's picture, and bad units
refused with a 422 naming the field (tiny random SD, ControlNets and IP-Adapter, 32x32, two
steps)."""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="server extra (pip install .[server])")
pytest.importorskip("diffusers", reason="tiny test models are built with diffusers")
webuiapi = pytest.importorskip("webuiapi", reason="the WebUI's client (extra: test)")

from control_tiny import circle, h94_plain, write_controlnets, write_image_encoder  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402
from sd_tiny import write_pipeline  # noqa: E402
from server_support import CachedLoader, live_server, pixels, png_b64  # noqa: E402

import gpucore  # noqa: E402
from diffusion.server import create_app  # noqa: E402

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)

PROMPT = "a red circle on a blue background"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("cn-server")
    model = write_pipeline(root / "models" / "tiny-sd")
    controlnets = write_controlnets(root / "ControlNet")
    save_file(h94_plain(31), controlnets / "ip-adapter_tiny.safetensors")
    write_image_encoder(root / "image_encoder")
    return create_app(model=model, controlnet_dir=controlnets, outputs=root / "outputs",
                      loader=CachedLoader(), image_encoders=[root / "image_encoder"])


@pytest.fixture(scope="module")
def api(app: Any) -> Any:
    with live_server(app) as url:
        where = urlparse(url)
        yield webuiapi.WebUIApi(host=where.hostname, port=where.port)


def test_webuiapi_units_same_image_twice_and_infotext(api: Any) -> None:
    titles = api.controlnet_model_list()
    assert [t.rsplit(" [", 1)[0] for t in titles] == ["ip-adapter_tiny", "tiny_canny",
                                                      "tiny_scribble"]
    titles = titles[1:]
    assert all(len(t.rsplit(" [", 1)[1]) == 9 for t in titles)  # the WebUI's 8-digit hash]
    assert {"none", "canny", "invert"} <= set(api.controlnet_module_list())
    assert api.controlnet_version() == 3
    picture = Image.fromarray(circle())
    units = [webuiapi.ControlNetUnit(image=picture, module="canny", model="tiny_canny",
                                     weight=0.8, resize_mode="Just Resize", processor_res=64,
                                     threshold_a=50, threshold_b=120),
             webuiapi.ControlNetUnit(image=picture, module="invert", model=titles[1],
                                     control_mode=2, guidance_end=0.6, pixel_perfect=True)]
    settings = dict(prompt=PROMPT, steps=2, width=32, height=32, seed=3, cfg_scale=5,
                    sampler_name="Euler a")
    # webuiapi writes the units into its mutable default `alwayson_scripts={}`, where every
    # later call in this process (other tests' too) would send them: each call gets its own
    first = api.txt2img(controlnet_units=units, alwayson_scripts={}, **settings)
    again = api.txt2img(controlnet_units=units, alwayson_scripts={}, **settings)
    plain = api.txt2img(alwayson_scripts={}, **settings)
    assert np.array_equal(np.asarray(first.image), np.asarray(again.image))
    assert np.abs(np.asarray(first.image, np.int16) - np.asarray(plain.image)).mean() > 1
    text = first.info["infotexts"][0]
    assert ('ControlNet 0: "Module: canny, Model: ' + titles[0] + ', Weight: 0.8, Resize Mode: '
            'Just Resize, Processor Res: 64, Threshold A: 50.0, Threshold B: 120.0, Guidance '
            'Start: 0.0, Guidance End: 1.0, Pixel Perfect: False, Control Mode: Balanced"'
            ) in text, text
    # pixel perfect, Resize and Fill: the 40x48 picture's short side scaled to fit in
    # 32x32 (by 32 / 48): 26.7 -> 27 (webuiapi's default resize mode)
    assert ('ControlNet 1: "Module: invert, Model: ' + titles[1] + ', Weight: 1.0, Resize '
            'Mode: Resize and Fill, Processor Res: 27, Threshold A: 0.5, Threshold B: 0.5, '
            'Guidance Start: 0.0, Guidance End: 0.6, Pixel Perfect: True, Control Mode: '
            'ControlNet is more important"') in text, text
    assert first.info["extra_generation_params"]["ControlNet 1"].startswith("Module: invert")
    assert "ControlNet" not in plain.info["infotexts"][0]


def _plain_and_controlled(api: Any, width: int, height: int, units: dict[Any, Any]
                          ) -> tuple[np.ndarray, dict[Any, np.ndarray]]:
    settings = dict(prompt=PROMPT, steps=1, width=width, height=height, seed=3, cfg_scale=1,
                    sampler_name="Euler a", alwayson_scripts={})
    plain = np.asarray(api.txt2img(**settings).image, np.int16)
    return plain, {key: np.asarray(api.txt2img(controlnet_units=[unit], **settings).image,
                                   np.int16) for key, unit in units.items()}


def test_a_unit_with_webuiapis_defaults_controls_every_resize_mode(api: Any) -> None:
    """webuiapi's unit as its users send it (module "none", processor_res 512, Resize and
    Fill, Balanced) changes the picture at sizes unequal to processor_res and to the control
    picture's, in every resize mode, with and without pixel perfect; module "none" ignores
    the processor resolution (the extension fits the picture to the generation size by the
    resize mode alone). The frames are small (32x48 and 48x32: each generation's cost grows
    with its pixels, and ten of them made this the module's longest test at 48x80 and 96x64)
    and keep what the modes are about: a frame of another aspect than the 72x56 picture,
    portrait and landscape."""
    picture = Image.fromarray(circle(56, 72))

    def unit(**fields: Any) -> Any:
        return webuiapi.ControlNetUnit(image=picture, module="none", model="tiny_canny",
                                       **fields)

    units = {(mode, perfect, 512): unit(resize_mode=mode, pixel_perfect=perfect)
             for mode in ("Just Resize", "Crop and Resize", "Resize and Fill")
             for perfect in (False, True)}
    units["Just Resize", False, 64] = unit(resize_mode="Just Resize", processor_res=64)
    plain, seen = _plain_and_controlled(api, 32, 48, units)
    for key, image in seen.items():
        assert np.abs(image - plain).mean() > 1, key
    np.testing.assert_array_equal(seen["Just Resize", False, 64],
                                  seen["Just Resize", False, 512])
    # the resize modes fit a 72x56 picture differently to a 32x48 frame
    assert not np.array_equal(seen["Just Resize", False, 512],
                              seen["Crop and Resize", False, 512])
    # webuiapi's defaults at a wider size
    plain, seen = _plain_and_controlled(api, 48, 32, {"default": unit()})
    assert np.abs(seen["default"] - plain).mean() > 1


def test_tile_colorfix_units_change_the_picture(api: Any) -> None:
    """tile_colorfix's map is the picture as it is ("none"'s), and its hook then pulls the
    predicted picture's low frequencies toward the control picture's latents; +sharp's
    Sharpness changes it again. Their sliders are in /controlnet/module_list."""
    detail = api.session.get(f"{api.baseurl.removesuffix('/sdapi/v1')}/controlnet/module_list"
                             ).json()["module_detail"]
    assert [s["name"] for s in detail["tile_colorfix"]["sliders"]] == ["Variation"]
    assert [(s["name"], s["value"], s["min"], s["max"])
            for s in detail["tile_colorfix+sharp"]["sliders"]] == [
        ("Variation", 8.0, 3.0, 32.0), ("Sharpness", 1.0, 0.0, 2.0)]
    picture = Image.fromarray(circle(40, 48))
    settings = dict(prompt=PROMPT, steps=2, width=32, height=32, seed=3, cfg_scale=5,
                    sampler_name="Euler a", alwayson_scripts={})

    def unit(module: str, **fields: Any) -> Any:
        return webuiapi.ControlNetUnit(image=picture, module=module, model="tiny_canny",
                                       resize_mode="Just Resize", **fields)

    units = {"none": unit("none"), "fix": unit("tile_colorfix", threshold_a=3),
             "sharp": unit("tile_colorfix+sharp", threshold_a=3, threshold_b=2.0)}
    seen = {key: np.asarray(api.txt2img(controlnet_units=[one], **settings).image, np.int16)
            for key, one in units.items()}
    assert np.abs(seen["fix"] - seen["none"]).mean() > 1
    assert np.abs(seen["sharp"] - seen["fix"]).mean() > 1


def test_img2img_unit_takes_the_init_image(api: Any) -> None:
    """img2img: a unit sent without a picture uses the init image, as in the extension."""
    unit = webuiapi.ControlNetUnit(module="invert", model="tiny_canny", resize_mode=0)
    result = api.img2img(images=[Image.fromarray(circle(32, 32))], prompt=PROMPT, steps=2,
                         denoising_strength=0.5, seed=5, width=32, height=32,
                         controlnet_units=[unit], alwayson_scripts={})
    assert np.asarray(result.image).shape == (32, 32, 3)
    assert 'ControlNet 0: "Module: invert, Model: tiny_canny [' in result.info["infotexts"][0]


def test_an_inpaint_unit_takes_the_mask_as_inverted(api: Any) -> None:
    """Inpaint not masked (inpainting_mask_invert): the unit's mask (img2img's) is inverted
    too, as the extension's prepare_mask inverts it: the picture of the inverted mask sent as
    it is, not that of the mask sent."""
    mask = np.zeros((32, 32), np.uint8)
    mask[:, :16] = 255
    unit = webuiapi.ControlNetUnit(module="inpaint_only", model="tiny_canny", resize_mode=0)

    def inpaint(picture: np.ndarray, invert: int) -> np.ndarray:
        result = api.img2img(images=[Image.fromarray(circle(32, 32))], prompt=PROMPT, steps=2,
                             denoising_strength=0.5, seed=5, width=32, height=32, mask_blur=0,
                             mask_image=Image.fromarray(picture), inpainting_fill=1,
                             inpaint_full_res=False, inpainting_mask_invert=invert,
                             controlnet_units=[unit], alwayson_scripts={})
        assert "Mask mode: Inpaint not masked" in result.info["infotexts"][0] or not invert
        return np.asarray(result.image)

    inverted = inpaint(mask, 1)
    assert np.array_equal(inverted, inpaint(255 - mask, 0))
    assert not np.array_equal(inverted, inpaint(mask, 0))


def test_ip_adapter_unit_gives_the_python_api_picture(app: Any, api: Any) -> None:
    """An IP-Adapter unit as the extension takes one (its module, the model by name, the
    server's image encoder) beside a ControlNet unit: the picture Python makes with the same
    adapter, encoder and ControlNet, and the extension's infotext."""
    from diffusion.loaders.control.catalog import load_control_model
    from diffusion.loaders.control.ip_adapter_file import load_ip_adapter
    from diffusion.pipelines.control import ControlUnit
    from diffusion.pipelines.ip_adapter import IPAdapterUnit
    from diffusion.preprocessors import preprocess

    state = app.state.server
    look, edges = circle(37, 45, seed=3), circle()
    units = [webuiapi.ControlNetUnit(image=Image.fromarray(look), module="ip-adapter_clip_sd15",
                                     model="ip-adapter_tiny", weight=0.7, guidance_end=0.8),
             webuiapi.ControlNetUnit(image=Image.fromarray(edges), module="canny",
                                     model="tiny_canny", resize_mode="Just Resize",
                                     processor_res=64, threshold_a=50, threshold_b=120)]
    settings = dict(prompt=PROMPT, steps=2, width=32, height=32, seed=8, cfg_scale=5,
                    sampler_name="Euler a")
    served = api.txt2img(controlnet_units=units, alwayson_scripts={}, **settings)
    text = served.info["infotexts"][0]
    assert ('ControlNet 0: "Module: ip-adapter_clip_sd15, Model: ip-adapter_tiny [') in text
    assert ('Weight: 0.7, Resize Mode: Resize and Fill, Processor Res: 512, Threshold A: 0.5, '
            'Threshold B: 0.5, Guidance Start: 0.0, Guidance End: 0.8, Pixel Perfect: False, '
            'Control Mode: Balanced"') in text, text

    pipe = state.worker.pipe
    device = pipe.unet.conv_in.weight.device
    root = state.controlnets.root
    adapter = load_ip_adapter(root / "ip-adapter_tiny.safetensors",
                              image_encoder=state.image_encoders.entries[0].path, device=device)
    edges_map = preprocess("canny", edges, threshold_a=50, threshold_b=120, resolution=64,
                           device=device)
    control = [IPAdapterUnit(adapter, look, weight=0.7, guidance_end=0.8),
               ControlUnit(load_control_model(root / "tiny_canny", device=device), edges_map,
                           resize_mode="Just Resize")]
    done = state.worker.submit(lambda: pipe.txt2img(
        PROMPT, steps=2, width=32, height=32, seed=8, cfg_scale=5, sampler="Euler a",
        control=control)).result()
    # (that the adapter changes a picture is test_ip_adapter's; a server that dropped the
    # unit would not give the Python API's picture, which has it)
    np.testing.assert_array_equal(np.asarray(served.image), np.asarray(done.images[0]))


def test_detect(api: Any) -> None:
    picture = Image.fromarray(circle())
    found = api.controlnet_detect([picture], module="canny", processor_res=64,
                                  threshold_a=50, threshold_b=120)
    edges = np.asarray(found.images[0])
    assert edges.shape[:2] == (64, 77)  # the short side at processor_res
    assert set(np.unique(edges)) == {0, 255}


def test_detect_without_the_annotator_file_is_422_naming_it(
        app: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model-based module is listed with its slider; run without its file it is one line
    naming the file and the folder it was looked for in."""
    from diffusion.loaders.control.annotator_file import ENV_VAR

    client = TestClient(app)  # no lifespan: the app's worker outlives this test
    detail = client.get("/controlnet/module_list").json()["module_detail"]
    assert detail["softedge_hed"]["sliders"][0]["name"] == "Resolution"
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    for module in ("softedge_hed", "hed"):  # hed: the extension's own name of the module
        response = client.post("/controlnet/detect", json={
            "controlnet_module": module, "controlnet_processor_res": 64,
            "controlnet_input_images": [png_b64(Image.fromarray(circle(16, 16)))]})
        assert response.status_code == 422, response.text
        message = response.json()["detail"]
        assert "ControlNetHED.pth" in message and str(tmp_path / "hed") in message
        assert "\n" not in message


def test_detect_dwpose_answers_the_poses_json(app: Any,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """dw_openpose_full's detect answers the map and the extension's JSON for it: keypoints
    in pixels of the padded picture, the face's last two points the eyes; the networks
    themselves are test_dwpose's."""
    from diffusion.preprocessors import dwpose, openpose

    body: list[Any] = [None] * 18
    body[0], body[1], body[14] = (64.0, 16.0), (64.0, 32.0), (60.0, 12.0)
    face = [(50.5, 20.25)] * 68 + [body[14], None]
    seen = []
    monkeypatch.setattr(dwpose, "detect_wholebody", lambda image, *, pixels, device=None: (
        seen.append((image.shape[:2], pixels)) or [openpose.Pose(body, None, None, face)]))
    response = TestClient(app).post("/controlnet/detect", json={
        "controlnet_module": "dw_openpose_full", "controlnet_processor_res": 64,
        "controlnet_input_images": [png_b64(Image.fromarray(circle(40, 48)))]})
    assert response.status_code == 200, response.text
    found = response.json()
    assert seen == [((64, 128), True)]
    person = found["poses"][0]["people"][0]
    assert person["pose_keypoints_2d"][:6] == [64.0, 16.0, 1.0, 64.0, 32.0, 1.0]
    assert person["face_keypoints_2d"][-6:] == [60.0, 12.0, 1.0, 0.0, 0.0, 0.0]
    assert person["hand_left_keypoints_2d"] is None
    assert found["poses"][0]["canvas_height"] == 64
    drawn = pixels(found["images"][0])
    assert drawn.shape[:2] == (64, 77) and drawn.any()


def test_detect_openpose_answers_the_poses_json(app: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """openpose's detect answers the map and, as the extension, the people's JSON (canvas: the
    picture at processor_res, padded to 64s); the network itself is test_openpose's."""
    from diffusion.preprocessors import openpose

    person: list[Any] = [None] * 18
    person[0], person[1], person[2] = (0.5, 0.25), (0.5, 0.5), (0.25, 0.5)
    seen = []
    monkeypatch.setattr(openpose, "detect_people", lambda image, *, device=None: (
        seen.append(image.shape[:2]) or [person]))
    response = TestClient(app).post("/controlnet/detect", json={
        "controlnet_module": "openpose", "controlnet_processor_res": 64,
        "controlnet_input_images": [png_b64(Image.fromarray(circle(40, 48)))]})
    assert response.status_code == 200, response.text
    found = response.json()
    keypoints = [0.5, 0.25, 1.0, 0.5, 0.5, 1.0, 0.25, 0.5, 1.0] + [0.0] * 45
    assert seen == [(64, 128)]  # 64 x 77 padded to 64s
    assert found["poses"] == [{"people": [{
        "pose_keypoints_2d": keypoints, "face_keypoints_2d": None,
        "hand_left_keypoints_2d": None, "hand_right_keypoints_2d": None}],
        "canvas_height": 64, "canvas_width": 128}]
    drawn = pixels(found["images"][0])
    assert drawn.shape[:2] == (64, 77) and drawn.any()


def test_detect_of_an_unknown_module_is_422_naming_the_list(app: Any) -> None:
    response = TestClient(app).post("/controlnet/detect", json={
        "controlnet_module": "seg_ofade20k",
        "controlnet_input_images": [png_b64(Image.fromarray(circle(16, 16)))]})
    assert response.status_code == 422, response.text
    message = response.json()["detail"]
    assert "'seg_ofade20k'" in message and "softedge_hed" in message and "pidinet_safe" in message


def _unit(**fields: Any) -> dict[str, Any]:
    return {"enabled": True, "image": png_b64(Image.fromarray(circle(16, 16))),
            "model": "tiny_canny", "module": "none", **fields}


@pytest.mark.parametrize("fields, named", [
    ({"model": "control_v11p_sd15_depth"}, "args[0].model"),
    ({"module": "seg_ofade20k"}, "args[0].module"),
    ({"image": ""}, "args[0].image"),
    ({"image": "not base64!"}, "args[0].image"),
    ({"weight": math.nan}, "args[0].weight"),
    ({"weight": 2.5}, "args[0].weight"),
    ({"weight": "heavy"}, "args[0].weight"),
    ({"enabled": "yes"}, "args[0].enabled"),
    ({"guidance_start": 0.8, "guidance_end": 0.2}, "args[0].guidance_start"),
    ({"control_mode": 7}, "args[0].control_mode"),
    ({"resize_mode": "Stretch"}, "args[0].resize_mode"),
    ({"processor_res": "big"}, "args[0].processor_res"),
    ({"pixel_perfect": "no"}, "args[0].pixel_perfect"),
    ({"module": "ip-adapter_clip_h"}, "args[0].module: 'ip-adapter_clip_h' is an IP-Adapter "
                                      "module; model 'tiny_canny' is a controlnet"),
    ({"model": "ip-adapter_tiny", "module": "canny"}, "args[0].module: 'canny' makes a control "
                                                      "map; model 'ip-adapter_tiny' is an "
                                                      "IP-Adapter"),
    ({"module": "inpaint_only"}, "args[0].module: inpaint_only outside inpainting"),
    ({"module": "inpaint", "mask": png_b64(Image.new("L", (8, 8), 255))},
     "args[0].mask: 8x8, but the picture is 16x16"),
])
def test_bad_units_are_422_naming_the_field(app: Any, fields: dict[str, Any],
                                             named: str) -> None:
    client = TestClient(app)  # no lifespan: the app's worker outlives this test
    body = {"prompt": PROMPT, "steps": 1, "width": 32, "height": 32,
            "alwayson_scripts": {"controlnet": {"args": [_unit(**fields)]}}}
    # json.dumps writes NaN as Python's json module (and so webuiapi's requests) does
    response = client.post("/sdapi/v1/txt2img", content=json.dumps(body),
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert named in response.json()["detail"], response.json()


def test_units_read_as_the_extension_reads_them(app: Any) -> None:
    """Disabled units are skipped, names and numbers both select modes, the old field names
    still work, and a unit without a picture takes img2img's init image."""
    from diffusion.server.api.controlnet_units import parse_units
    from diffusion.server.api.generation import RequestError

    models = app.state.server.controlnets
    specs = parse_units([_unit(enabled=False), _unit(resize_mode=2, lowvram=True,
                                                     control_mode="my prompt is more important"),
                         {"model": "tiny_canny"}], models)  # no "enabled": skipped, as there
    assert len(specs) == 1
    assert specs[0].resize_mode == "Resize and Fill"
    assert specs[0].control_mode == "My prompt is more important"
    legacy = {k: v for k, v in _unit().items() if k != "image"}
    legacy.update(input_image=_unit()["image"], guidance=0.5)
    spec, = parse_units([legacy], models)
    assert spec.guidance_end == 0.5 and spec.image.shape == (16, 16, 3)
    assert spec.model.endswith("tiny_canny")  # a path on the server, never the client's
    no_image = {k: v for k, v in _unit().items() if k != "image"}
    fallback = circle(8, 8)
    spec, = parse_units([no_image], models, fallback=fallback)
    assert spec.image is fallback
    # the inpaint modules' mask: the unit's own (here in the image dict), else img2img's
    disc = circle(16, 16)
    with_mask = _unit(module="inpaint_global_harmonious",
                      image={"image": _unit()["image"], "mask": png_b64(Image.fromarray(disc))})
    spec, = parse_units([with_mask], models)
    np.testing.assert_array_equal(spec.mask, disc[:, :, 0])
    spec, = parse_units([{**no_image, "module": "inpaint_only"}], models, fallback=fallback,
                        inpainting=True, fallback_mask=fallback[:, :, 1])
    assert spec.image is fallback and spec.mask is not None and spec.mask.shape == (8, 8)
    ip_unit = _unit(model="ip-adapter_tiny", module="ip-adapter_clip_h")
    spec, = parse_units([ip_unit], models, encoders=app.state.server.image_encoders)
    assert spec.image_encoder == str(app.state.server.image_encoders.entries[0].path)
    with pytest.raises(RequestError, match=r"args\[0\]\.module: 'ip-adapter_clip_h' needs a "
                                           "CLIP image encoder and this server has none: start "
                                           "it with --image-encoder PATH"):
        parse_units([ip_unit], models)


def test_a_plain_picture_carries_no_mask() -> None:
    """The extension's `image` is a base64 string or {image, mask}: only the second has a mask
    (a plain string once came back as its own mask, repainting wherever the picture is bright)."""
    from diffusion.server.api.controlnet_units import _picture

    picture = np.zeros((8, 8, 3), np.uint8)
    picture[2:5] = 255
    mask = np.full((8, 8, 3), 255, np.uint8)
    plain = png_b64(Image.fromarray(picture))
    assert _picture(plain, "unit.image", "mask") is None
    np.testing.assert_array_equal(_picture(plain, "unit.image"), picture)
    both = {"image": plain, "mask": png_b64(Image.fromarray(mask))}
    np.testing.assert_array_equal(_picture(both, "unit.image", "mask"), mask)


def test_a_transparent_picture_is_on_white() -> None:
    """A unit's picture with alpha (lineart on a transparent background) is blended over
    white, as the extension's HWC3 does; it was dropped, leaving black lines on black."""
    from diffusion.server.api.controlnet_units import _picture

    lines = np.zeros((8, 8, 4), np.uint8)
    lines[2:4, :, 3] = 255  # black strokes, the rest transparent black
    got = _picture(png_b64(Image.fromarray(lines)), "unit.image", over_white=True)
    assert got.shape == (8, 8, 3)
    assert (got[2:4] == 0).all() and (got[:2] == 255).all() and (got[4:] == 255).all()

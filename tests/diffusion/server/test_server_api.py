"""The WebUI-compatible HTTP API (`python -m diffusion serve`) on tiny random models, on the
first adapter: contract and defaults, determinism, per-image seeds, model switching, png-info,
saving, and bad input. Queueing, interrupt/skip and auth are in test_server_queue.py."""

from __future__ import annotations

import base64
import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="server extra (pip install .[server])")
pytest.importorskip("diffusers", reason="tiny test models are built with diffusers")

from fastapi.testclient import TestClient
from PIL import Image
from server_support import (
    PROMPT,
    Background,
    CachedLoader,
    info,
    pixels,
    png_b64,
    wait_for_step,
    write_models,
)

import gpucore
from diffusion.infotext import read_infotext
from diffusion.loaders import WeightsError
from diffusion.sampling.samplers import SAMPLERS
from diffusion.server import create_app
from diffusion.server.catalog.models_dir import folder_sha256

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)


TINY_B_DEFAULTS = '{"steps": 3, "sampler": "dpm++ 2m karras", "cfg_scale": 4.5}'


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = write_models(tmp_path_factory.mktemp("server-models"))
    (models / "tiny-b" / "defaults.json").write_text(TINY_B_DEFAULTS, encoding="utf-8")
    return models


@pytest.fixture(scope="module")
def loader() -> CachedLoader:
    return CachedLoader()


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("outputs")


@pytest.fixture(scope="module")
def client(models: Path, loader: CachedLoader, outputs: Path) -> Any:
    app = create_app(model=models / "tiny-a", models_dir=models, outputs=outputs,
                     max_size=256, max_body_bytes=2**20, loader=loader,
                     cmd_flags={"port": 7860, "api_auth": "u:p"})
    with TestClient(app) as test_client:
        yield test_client


def txt2img(client: Any, **body: Any) -> Any:
    response = client.post("/sdapi/v1/txt2img", json={"prompt": PROMPT, "steps": 2, **body})
    assert response.status_code == 200, response.text
    return response


def test_txt2img_contract_and_defaults(client: Any, models: Path) -> None:
    response = txt2img(client, seed=7, some_extension_field={"x": 1})
    body = response.json()
    assert set(body) == {"images", "parameters", "info"}
    assert isinstance(body["info"], str)
    parameters = body["parameters"]
    assert parameters["steps"] == 2 and parameters["seed"] == 7
    # the WebUI's defaults for what the client left out
    assert parameters["cfg_scale"] == 7.0 and parameters["batch_size"] == 1
    assert parameters["n_iter"] == 1 and parameters["sampler_index"] == "Euler"
    assert parameters["send_images"] is True and parameters["save_images"] is False
    assert parameters["negative_prompt"] == "" and parameters["subseed"] == -1
    assert "some_extension_field" not in parameters  # accepted and ignored
    data = info(response)
    sha = folder_sha256(models / "tiny-a")
    assert data["sd_model_name"] == "tiny-a" and data["sd_model_hash"] == sha[:10]
    assert data["seed"] == 7 and data["all_seeds"] == [7]
    assert data["prompt"] == PROMPT and data["all_prompts"] == [PROMPT]
    assert data["sampler_name"] == "Euler" and data["steps"] == 2
    assert data["clip_skip"] == 1 and data["batch_size"] == 1 and data["n_iter"] == 1
    assert data["width"] == data["height"] == 32  # the tiny model's native size, not 512
    assert len(data["job_timestamp"]) == 14 and data["subseed"] >= 0
    assert len(body["images"]) == 1
    image = pixels(body["images"][0])
    assert image.shape == (32, 32, 3)
    text = data["infotexts"][0]
    assert text.startswith(PROMPT)
    assert "Steps: 2, Sampler: Euler, Schedule type: Automatic, CFG scale: 7, Seed: 7" in text


def test_same_seed_same_image_and_each_image_its_own_seed(client: Any) -> None:
    batch = txt2img(client, seed=11, batch_size=2, n_iter=2, steps=1)
    data = info(batch)
    assert data["all_seeds"] == [11, 12, 13, 14] and len(batch.json()["images"]) == 4
    images = [pixels(b) for b in batch.json()["images"]]
    assert not np.array_equal(images[0], images[1])
    alone = txt2img(client, seed=13, steps=1)
    np.testing.assert_array_equal(pixels(alone.json()["images"][0]), images[2])
    again = txt2img(client, seed=11, steps=1)
    assert again.json()["images"][0] == batch.json()["images"][0]  # byte for byte


def test_sampler_scheduler_clip_skip_and_size(client: Any) -> None:
    response = txt2img(client, seed=3, sampler_name="DPM++ 2M", scheduler="Karras",
                       width=48, height=40, cfg_scale=5,
                       override_settings={"CLIP_stop_at_last_layers": 2})
    data = info(response)
    assert data["sampler_name"] == "DPM++ 2M" and data["scheduler"] == "Karras"
    assert data["clip_skip"] == 2
    assert pixels(response.json()["images"][0]).shape == (40, 48, 3)
    assert "Clip skip: 2" in data["infotexts"][0] and "Size: 48x40" in data["infotexts"][0]
    uniform = txt2img(client, seed=3, sampler_name="DPM++ 2M", scheduler="uniform", width=48,
                      height=40, cfg_scale=5, override_settings={"CLIP_stop_at_last_layers": 2})
    assert info(uniform)["scheduler"] == "Uniform"
    assert uniform.json()["images"][0] != response.json()["images"][0]
    automatic = txt2img(client, seed=3, sampler_name="DPM++ 2M", width=48, height=40,
                        cfg_scale=5, override_settings={"CLIP_stop_at_last_layers": 2})
    assert automatic.json()["images"][0] == response.json()["images"][0]  # Automatic = Karras
    assert not txt2img(client, send_images=False).json()["images"]


def test_img2img_with_data_url_and_mask(client: Any) -> None:
    init = Image.new("RGB", (40, 40), (200, 30, 30))
    mask = Image.new("L", (40, 40), 0)
    mask.paste(255, (0, 0, 20, 40))
    body = {"prompt": PROMPT, "steps": 4, "seed": 5, "denoising_strength": 0.5,
            "init_images": ["data:image/png;base64," + png_b64(init)],
            "mask": png_b64(mask), "mask_blur": 0, "inpainting_mask_invert": 1,
            "resize_mode": 1, "inpainting_fill": 1, "inpaint_full_res": False}
    response = client.post("/sdapi/v1/img2img", json=body)
    assert response.status_code == 200, response.text
    data = info(response)
    assert data["denoising_strength"] == 0.5 and data["all_seeds"] == [5]
    assert response.json()["parameters"]["init_images"] is None  # as the WebUI echoes it
    assert pixels(response.json()["images"][0]).shape == (32, 32, 3)
    assert "Denoising strength: 0.5, Mask mode: Inpaint not masked" in data["infotexts"][0]
    # inpainting_mask_invert=1 with a mask = the inverted mask sent as is, as the WebUI
    # writes each ("Mask mode" only for the first); png-info gives it back
    inverted = Image.eval(mask, lambda v: 255 - v)
    same = client.post("/sdapi/v1/img2img", json={**body, "init_images": [png_b64(init)],
                                                  "mask": png_b64(inverted),
                                                  "inpainting_mask_invert": 0})
    assert np.array_equal(pixels(same.json()["images"][0]),
                          pixels(response.json()["images"][0]))
    assert "Mask mode" not in info(same)["infotexts"][0]
    png = client.post("/sdapi/v1/png-info", json={"image": response.json()["images"][0]})
    assert png.json()["parameters"]["Mask mode"] == "Inpaint not masked"
    unmasked = client.post("/sdapi/v1/img2img", json={**body, "mask": None})
    assert not np.array_equal(pixels(unmasked.json()["images"][0]),
                              pixels(response.json()["images"][0]))


def test_img2img_only_masked_keeps_the_picture(client: Any) -> None:
    """inpaint_full_res, the API's default: the part around the (blurred) mask is drawn at
    width x height and pasted into the picture as sent, which keeps its size and, outside the
    drawn box, its pixels; a blank mask redraws the whole picture at width x height, as the
    WebUI switches to img2img. The API's defaults blur the mask by 4 and fill its part
    (mask_blur_x/y 4, inpainting_fill 0), written as the WebUI writes them."""
    from diffusion.pipelines.inpaint_area import MaskedArea
    from diffusion.pipelines.mask_blur import blur_mask

    init = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    mask = Image.new("L", (48, 40))
    mask.paste(255, (30, 4, 38, 12))
    body = {"prompt": PROMPT, "steps": 2, "seed": 5, "mask_blur": 2,
            "init_images": [png_b64(Image.fromarray(init))], "mask": png_b64(mask),
            "inpaint_full_res_padding": 2}
    response = client.post("/sdapi/v1/img2img", json=body)
    assert response.status_code == 200, response.text
    image = pixels(response.json()["images"][0])
    assert image.shape == (40, 48, 3)
    text = info(response)["infotexts"][0]
    assert "Size: 32x32" in text and ("Mask blur: 2, Inpaint area: Only masked, Masked area "
                                      "padding: 2, Masked content: fill") in text
    area = MaskedArea.find(blur_mask(mask, 2, 2), 2, 32, 32)
    assert area is not None
    x1, y1, x2, y2 = area.box
    outside = np.ones((40, 48), bool)
    outside[y1:y2, x1:x2] = False
    assert np.array_equal(image[outside], init[outside]) and not np.array_equal(image, init)
    with pytest.warns(UserWarning, match="the mask is blank"):
        blank = client.post("/sdapi/v1/img2img", json={**body, "mask": png_b64(
            Image.new("L", (48, 40)))})
    assert pixels(blank.json()["images"][0]).shape == (32, 32, 3)
    assert "Inpaint area" not in info(blank)["infotexts"][0]
    assert "Masked content" not in info(blank)["infotexts"][0]  # no mask left to fill


def test_png_info_round_trip(client: Any) -> None:
    generated = txt2img(client, seed=21, negative_prompt="blurry")
    b64 = generated.json()["images"][0]
    response = client.post("/sdapi/v1/png-info", json={"image": "data:image/png;base64," + b64})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["info"] == info(generated)["infotexts"][0]
    parameters = body["parameters"]
    assert parameters["Prompt"] == PROMPT and parameters["Negative prompt"] == "blurry"
    assert parameters["Seed"] == 21 and parameters["Steps"] == 2
    assert parameters["Size-1"] == 32 and parameters["Sampler"] == "Euler"
    # what the WebUI's parser gives the fields an infotext leaves out
    assert (parameters["Mask mode"], parameters["Hires resize-1"], parameters["RNG"]) == (
        "Inpaint masked", 0, "GPU")
    plain = client.post("/sdapi/v1/png-info", json={"image": png_b64(Image.new("RGB", (8, 8)))})
    assert plain.status_code == 200 and plain.json()["info"] == ""


def test_listings(client: Any, models: Path) -> None:
    samplers = client.get("/sdapi/v1/samplers").json()
    assert [s["name"] for s in samplers] == [info.name for info in SAMPLERS]
    assert all(set(s) == {"name", "aliases", "options"} for s in samplers)
    by_name = {s["name"]: s for s in samplers}
    assert by_name["DPM++ 2M"]["options"] == {"scheduler": "karras"}  # the WebUI's entry
    assert by_name["Euler a"]["aliases"] == ["euler_ancestral", "k_euler_a", "k_euler_ancestral"]
    schedulers = client.get("/sdapi/v1/schedulers").json()
    assert [s["label"] for s in schedulers] == [
        "Automatic", "Uniform", "Karras", "Exponential", "Polyexponential", "SGM Uniform",
        "KL Optimal", "Align Your Steps", "Simple", "Normal", "DDIM", "Beta"]
    assert all({"name", "label"} <= set(s) for s in schedulers)
    items = client.get("/sdapi/v1/sd-models").json()
    assert [i["model_name"] for i in items] == ["tiny-a", "tiny-b"]
    for item in items:
        assert item["sha256"] == folder_sha256(models / item["model_name"])
        assert item["hash"] == item["sha256"][:10]
        assert item["title"] == f"{item['model_name']} [{item['hash']}]"
        assert Path(item["filename"]) == (models / item["model_name"]).resolve()
    progress = client.get("/sdapi/v1/progress").json()
    assert progress["progress"] == 0 and progress["current_image"] is None
    assert {"job_count", "job_no", "sampling_step", "sampling_steps", "interrupted", "skipped",
            "job", "job_timestamp"} <= set(progress["state"])
    assert client.get("/sdapi/v1/cmd-flags").json()["api_auth"] == "***"
    memory = client.get("/sdapi/v1/memory").json()
    assert memory["ram"]["total"] > 0
    cuda = memory["cuda"]  # the WebUI's fields, from the device's memory_stats()
    assert set(cuda) == {"system", "active", "allocated", "reserved", "inactive", "events",
                         "devices"}  # and each device's figures (one here: the sums)
    assert [d["allocated"] for d in cuda["devices"]] == [cuda["allocated"]["current"]]
    assert cuda["reserved"]["current"] >= cuda["allocated"]["current"] > 0
    assert cuda["allocated"]["peak"] >= cuda["allocated"]["current"]
    assert client.post("/sdapi/v1/refresh-checkpoints").status_code == 200
    for nothing in ("prompt-styles", "hypernetworks"):  # empty lists: no styles.csv here
        answer = client.get(f"/sdapi/v1/{nothing}")
        assert answer.status_code == 200 and answer.json() == [], (nothing, answer.text)


def test_options_switch_model_by_title(client: Any, loader: CachedLoader) -> None:
    options = client.get("/sdapi/v1/options").json()
    assert options["sd_model_checkpoint"].startswith("tiny-a [")
    assert options["CLIP_stop_at_last_layers"] == 1
    titles = {i["model_name"]: i["title"] for i in client.get("/sdapi/v1/sd-models").json()}
    a = txt2img(client, seed=4).json()["images"][0]
    switched = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": titles["tiny-b"]})
    assert switched.status_code == 200, switched.text
    try:
        assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == titles["tiny-b"]
        b = txt2img(client, seed=4)
        assert info(b)["sd_model_name"] == "tiny-b" and b.json()["images"][0] != a
        assert loader.calls[-1].name == "tiny-b"
    finally:
        back = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "tiny-a",
                                                      "CLIP_stop_at_last_layers": 2})
        assert back.status_code == 200, back.text
    assert info(txt2img(client, seed=4))["clip_skip"] == 2
    client.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 1})
    assert txt2img(client, seed=4).json()["images"][0] == a


def test_page_defaults_follow_the_loaded_model(client: Any) -> None:
    titles = {i["model_name"]: i["title"] for i in client.get("/sdapi/v1/sd-models").json()}
    assert client.get("/avx/defaults").json() == {
        "model": titles["tiny-a"], "steps": None, "sampler": None, "cfg_scale": None,
        "scheduler": None, "family": "sd1", "distilled_cfg": False, "references": 0}
    switched = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "tiny-b"})
    assert switched.status_code == 200, switched.text
    try:
        assert client.get("/avx/defaults").json() == {
            "model": titles["tiny-b"], "steps": 3, "sampler": "DPM++ 2M",
            "scheduler": "karras", "cfg_scale": 4.5, "family": "sd1", "distilled_cfg": False,
            "references": 0}
        # they are the page's starting point only: the API keeps the WebUI's defaults
        # (50 steps: seen in the progress, then interrupted)
        job = Background(lambda: client.post("/sdapi/v1/txt2img", json={"prompt": PROMPT}))
        assert wait_for_step(client.get, step=1)["state"]["sampling_steps"] == 50
        client.post("/sdapi/v1/interrupt")
        data = info(job.result())
        assert data["sd_model_name"] == "tiny-b"
        assert (data["steps"], data["sampler_name"], data["cfg_scale"]) == (50, "Euler", 7.0)
        assert "Steps: 50, Sampler: Euler, Schedule type: Automatic, CFG scale: 7, " in (
            data["infotexts"][0])
    finally:
        back = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "tiny-a"})
        assert back.status_code == 200, back.text


def test_a_bad_defaults_json_is_refused_with_its_file_named(
        client: Any, models: Path, loader: CachedLoader, tmp_path: Path) -> None:
    bad = tmp_path / "more" / "bad-defaults"
    shutil.copytree(models / "tiny-a", bad)
    (bad / "defaults.json").write_text('{"steps": 10, "cfg": 5}', encoding="utf-8")
    message = f"{bad / 'defaults.json'}: unknown key 'cfg'; allowed: steps, sampler, cfg_scale"
    with pytest.raises(WeightsError) as refused:  # at start: no app
        create_app(model=bad, outputs=tmp_path, loader=loader)
    assert str(refused.value) == message
    app = create_app(model=models / "tiny-a", models_dir=bad.parent, outputs=tmp_path,
                     loader=loader)
    with TestClient(app) as other:  # switching to it: 422, the loaded model stays
        response = other.post("/sdapi/v1/options", json={"sd_model_checkpoint": "bad-defaults"})
        assert response.status_code == 422 and response.json()["detail"] == message
        assert other.get("/avx/defaults").json()["model"].startswith("tiny-a [")
    assert loader.calls.count(bad) == 2  # both refusals came from loading it


def test_saved_files_in_webui_layout(client: Any, outputs: Path) -> None:
    response = txt2img(client, seed=31, batch_size=2, save_images=True)
    folder = outputs / "txt2img-images" / datetime.now().strftime("%Y-%m-%d")
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["00000-31.png", "00001-32.png"]
    assert read_infotext(folder / "00001-32.png") == info(response)["infotexts"][1]
    assert not list(folder.glob(".*"))  # no temporary files left


def _bad(client: Any, path: str, body: dict[str, Any], status: int, *needles: str) -> None:
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    for needle in needles:
        assert needle in detail, detail


NOT_IMAGE = base64.b64encode(b"hello, not a picture").decode()


@pytest.mark.parametrize("path, body, needles", [
    ("/sdapi/v1/txt2img", {"width": 33}, ("multiple of 8", "try 32")),
    ("/sdapi/v1/txt2img", {"height": 512}, ("limit of 256",)),
    # the size left to the model: the hires pass is held to --max-size all the same
    ("/sdapi/v1/txt2img", {"enable_hr": True, "hr_resize_x": 264}, ("hires size 264",
                                                                    "limit of 256")),
    ("/sdapi/v1/txt2img", {"steps": 0}, ("steps must be a whole number from 1 to 1000",)),
    ("/sdapi/v1/txt2img", {"steps": 1001}, ("steps must be a whole number from 1 to 1000",)),
    ("/sdapi/v1/txt2img", {"steps": "many"}, ("steps",)),
    ("/sdapi/v1/txt2img", {"batch_size": 0}, ("batch_size",)),
    ("/sdapi/v1/txt2img", {"n_iter": 101}, ("n_iter",)),
    ("/sdapi/v1/txt2img", {"sampler_name": "Euler z"}, ("unknown sampler_name", "DPM++ 2M")),
    ("/sdapi/v1/txt2img", {"scheduler": "Exponentialish"}, ("unknown schedule type",
                                                            "Karras")),
    ("/sdapi/v1/txt2img", {"override_settings": {"CLIP_stop_at_last_layers": 0}},
     ("CLIP_stop_at_last_layers",)),
    ("/sdapi/v1/txt2img", {"override_settings": {"randn_source": 5}},
     ("override_settings.randn_source must be 'GPU', 'CPU' or 'NV', got 5",)),
    ("/sdapi/v1/options", {"randn_source": "TPU"}, ("randn_source must be", "got 'TPU'")),
    ("/sdapi/v1/img2img", {"init_images": ["%%%not base64%%%"]}, ("not valid base64",)),
    ("/sdapi/v1/img2img", {"init_images": [NOT_IMAGE]}, ("not a readable image",)),
    ("/sdapi/v1/img2img", {"init_images": []}, ("init_images is empty",)),
    ("/sdapi/v1/img2img", {"init_images": [png_b64(Image.new("RGB", (16, 16)))],
                           "mask": png_b64(Image.new("L", (8, 8)))}, ("mask is 8x8",)),
    ("/sdapi/v1/img2img", {"init_images": [png_b64(Image.new("RGB", (16, 16)))],
                           "denoising_strength": 0}, ("denoising_strength",)),
    ("/sdapi/v1/png-info", {"image": NOT_IMAGE}, ("not a readable image (no format Pillow",)),
    ("/sdapi/v1/options", {"sd_model_checkpoint": "../tiny-a"}, ("not one of", "tiny-b [")),
    ("/sdapi/v1/options", {"sd_model_checkpoint": "/etc/passwd"}, ("not one of",)),
])
def test_bad_input_is_a_helpful_422(client: Any, path: str, body: dict[str, Any],
                                    needles: tuple[str, ...]) -> None:
    _bad(client, path, {"prompt": PROMPT, "steps": 2, **body}
         if "txt2img" in path or "img2img" in path else body, 422, *needles)
    assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"].startswith("tiny-a")


@pytest.mark.parametrize("path", ["/sdapi/v1/txt2img", "/sdapi/v1/options",
                                  "/sdapi/v1/png-info"])
def test_malformed_json_is_a_422_saying_so(client: Any, path: str) -> None:
    # pydantic's parser (txt2img) and FastAPI's (the others) report it alike, with where
    response = client.post(path, content=b'{"steps": 2,}',
                           headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail.startswith("the body is not valid JSON (") and " at " in detail, detail


def test_oversized_body_is_413(client: Any) -> None:
    huge = json.dumps({"prompt": "x" * (2**20 + 10)})
    response = client.post("/sdapi/v1/txt2img", content=huge,
                           headers={"content-type": "application/json"})
    assert response.status_code == 413 and "limit of 1 MiB" in response.json()["detail"]

    def chunks() -> Any:
        for _ in range(3):
            yield b"x" * 2**19
    response = client.post("/sdapi/v1/txt2img", content=chunks(),
                           headers={"content-type": "application/json"})
    assert response.status_code == 413
    # OpenAI's images API: the same limit, in its error shape
    response = client.post("/v1/images/edits", files={"image": ("in.png", b"x" * 2**21)},
                           data={"prompt": "a"})
    error = response.json()["error"]
    assert response.status_code == 413 and "limit of 1 MiB" in error["message"]
    assert error["code"] == "request_too_large"


def test_hires_fix_and_variation_seeds(client: Any) -> None:
    """enable_hr runs the second pass at hr_scale; a variation seed moves the picture and is
    written as the WebUI writes it."""
    hires = txt2img(client, seed=5, steps=2, enable_hr=True, hr_scale=1.5,
                    hr_second_pass_steps=1, denoising_strength=0.5)
    assert hires.status_code == 200, hires.text
    text = info(hires)["infotexts"][0]
    assert pixels(hires.json()["images"][0]).shape == (48, 48, 3)
    assert text.endswith("Denoising strength: 0.5, Hires upscale: 1.5, Hires steps: 1, "
                         "Hires upscaler: Latent")
    plain = txt2img(client, seed=5, steps=2)
    varied = txt2img(client, seed=5, steps=2, subseed=9, subseed_strength=0.5)
    assert "Variation seed: 9, Variation seed strength: 0.5" in info(varied)["infotexts"][0]
    assert varied.json()["images"][0] != plain.json()["images"][0]
    bad = client.post("/sdapi/v1/txt2img", json={"prompt": PROMPT, "enable_hr": True,
                                                 "hr_upscaler": "ESRGAN_4x"})
    assert bad.status_code == 422 and "unknown hires upscaler" in bad.text


def test_embeddings_listing(tmp_path: Path) -> None:
    """GET /sdapi/v1/embeddings' shape: loaded with vectors and width (an SDXL file's two
    widths together, as the WebUI gives them), pickles skipped."""
    from safetensors.numpy import save_file

    from diffusion.server.api.routers.models import embedding_listing
    from diffusion.text.embeddings import EmbeddingDatabase

    save_file({"emb_params": np.ones((3, 32), np.float32)}, str(tmp_path / "fluffy.safetensors"))
    save_file({"clip_l": np.ones((2, 768), np.float32), "clip_g": np.ones((2, 1280), np.float32)},
              str(tmp_path / "xl.safetensors"))
    (tmp_path / "old.pt").write_bytes(b"pickle")
    listing = embedding_listing(EmbeddingDatabase(tmp_path))
    assert listing["loaded"]["xl"]["vectors"] == 2 and listing["loaded"]["xl"]["shape"] == 2048
    assert listing["loaded"]["fluffy"]["vectors"] == 3
    assert listing["loaded"]["fluffy"]["shape"] == 32
    assert "pickle" in listing["skipped"]["old"]["reason"]
    assert embedding_listing(None) == {"loaded": {}, "skipped": {}}


def test_lora_listing(tmp_path: Path) -> None:
    """GET /sdapi/v1/loras' shape: name, alias (kohya's ss_output_name), path, metadata."""
    from safetensors.numpy import save_file

    from diffusion.server.api.routers.models import lora_listing

    tensors = {"lora_unet_x.lora_down.weight": np.ones((2, 4), np.float32)}
    save_file(tensors, str(tmp_path / "fluffy.safetensors"), metadata={"ss_output_name": "Fluf"})
    (tmp_path / "sub").mkdir()
    save_file(tensors, str(tmp_path / "sub" / "plain.safetensors"))
    listing = {item["name"]: item for item in lora_listing(tmp_path)}
    assert listing["fluffy"]["alias"] == "Fluf" and listing["plain"]["alias"] == "plain"
    assert listing["fluffy"]["metadata"] == {"ss_output_name": "Fluf"}
    assert Path(listing["plain"]["path"]) == tmp_path / "sub" / "plain.safetensors"
    assert lora_listing(None) == []


def test_sampler_settings_and_seed_resize(client: Any) -> None:
    """eta and override_settings' sigma churn reach the sampler and the infotext; seed resize
    keeps the seed's noise at another size (the WebUI's fields)."""
    base = txt2img(client, seed=8, sampler_name="Euler a")
    eta = txt2img(client, seed=8, sampler_name="Euler a", eta=0.5)
    assert eta.json()["images"][0] != base.json()["images"][0]
    assert info(eta)["infotexts"][0].endswith("Eta: 0.5")
    churn = txt2img(client, seed=8, sampler_name="Euler",
                    override_settings={"s_churn": 0.5})
    assert info(churn)["infotexts"][0].endswith("Sigma churn: 0.5")
    resized = txt2img(client, seed=8, sampler_name="Euler", seed_resize_from_w=24,
                      seed_resize_from_h=24)
    assert "Seed resize from: 24x24" in info(resized)["infotexts"][0]
    bad = client.post("/sdapi/v1/txt2img", json={"prompt": PROMPT, "sampler_name": "DDIM",
                                                 "seed_resize_from_w": 24,
                                                 "seed_resize_from_h": 24})
    assert bad.status_code == 422 and "need a k-diffusion sampler; DDIM" in bad.text


def test_hires_fix_with_a_model_upscaler(client: Any, tmp_path: Path) -> None:
    """hr_upscaler "R-ESRGAN 4x+" from --upscaler-dir (a tiny random RRDBNet in Real-ESRGAN's
    release layout): the first pass is upscaled by the network, then the hires pass runs."""
    torch = pytest.importorskip("torch", reason="test-only reference (extra: reference)")
    from diffusion.upscalers import models

    gen = torch.Generator().manual_seed(0)
    names = ["conv_first", *(f"body.0.rdb{j}.conv{k}" for j in (1, 2, 3) for k in range(1, 6)),
             "conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]
    ins = {f"body.0.rdb{j}.conv{k}": 4 + 2 * (k - 1) for j in (1, 2, 3) for k in range(1, 6)}
    state = {}
    for name in names:
        inputs = 3 if name == "conv_first" else ins.get(name, 4)
        outputs = 3 if name == "conv_last" else 4 if name.endswith("conv5") or "rdb" not in \
            name else 2
        state[f"{name}.weight"] = torch.randn(outputs, inputs, 3, 3, generator=gen) * 0.2
        state[f"{name}.bias"] = torch.zeros(outputs)
    torch.save({"params_ema": state}, tmp_path / "RealESRGAN_x4plus.pth")
    before = dict(models.MODEL_UPSCALERS)
    try:
        models.register_upscaler_dir(tmp_path)
        models.MODEL_UPSCALERS["R-ESRGAN 4x+"].dtype = np.float32  # the VAE's conv kernels
        hires = txt2img(client, seed=5, steps=1, enable_hr=True, hr_scale=1.5,
                        hr_second_pass_steps=1, denoising_strength=0.5,
                        hr_upscaler="R-ESRGAN 4x+")
        assert pixels(hires.json()["images"][0]).shape == (48, 48, 3)
        assert info(hires)["infotexts"][0].endswith("Hires upscaler: R-ESRGAN 4x+")
    finally:
        models.MODEL_UPSCALERS.clear()
        models.MODEL_UPSCALERS.update(before)


def test_a_422_does_not_echo_a_huge_field(client: Any) -> None:
    # a wrong field can hold a whole picture: the answer shows the start of it
    response = client.post("/sdapi/v1/txt2img", json={"prompt": PROMPT, "steps": "x" * 10**6})
    assert response.status_code == 422 and "steps" in response.json()["detail"]
    assert len(response.content) < 4000, len(response.content)


def test_hires_resize_on_one_side_floors_as_the_webui() -> None:
    """hr_resize_y alone: the width is y * width // height (the WebUI's hr_upscale_to_x), not
    rounded: 768 * 256 / 424 = 463.7 is 463, a 456-pixel second pass, not 464."""
    from diffusion.server.api.generation import _hires
    from diffusion.server.api.schemas import Txt2ImgRequest

    request = Txt2ImgRequest(prompt=PROMPT, width=256, height=424, enable_hr=True,
                             hr_resize_y=768)
    assert _hires(request, 4096).target(256, 424) == (456, 768)


def test_hires_pass_prompt_and_sampler_of_its_own(client: Any) -> None:
    """hr_prompt, hr_sampler_name and hr_scheduler drive the second pass alone: with an
    image upscaler it is img2img from the first pass's picture (enlarged by Pillow; at scale 1
    as it is, which keeps the test at one size), which the same settings as an img2img
    request reproduce (hires steps 2 at 0.6 run the last 2 of 3 steps, as img2img's 3 steps
    at 0.6 do); written as the WebUI writes them and read back."""
    hires = dict(seed=5, steps=2, enable_hr=True, hr_scale=1.0, hr_upscaler="Lanczos",
                 hr_second_pass_steps=2, denoising_strength=0.6)
    own = dict(hr_prompt="a green square, (bright:1.2)", hr_sampler_name="DPM++ 2M",
               hr_scheduler="Karras")
    plain = txt2img(client, **hires)
    assert "Hires" not in info(plain)["infotexts"][0].split("Hires upscale")[0]
    second = txt2img(client, **hires, **own)
    image = pixels(second.json()["images"][0])
    assert image.shape == (32, 32, 3)
    assert not np.array_equal(image, pixels(plain.json()["images"][0]))
    first = txt2img(client, seed=5, steps=2).json()["images"][0]
    again = client.post("/sdapi/v1/img2img", json={
        "prompt": own["hr_prompt"], "steps": 3, "seed": 5, "denoising_strength": 0.6,
        "sampler_name": "DPM++ 2M", "scheduler": "Karras", "init_images": [first]})
    assert again.status_code == 200, again.text
    assert np.array_equal(pixels(again.json()["images"][0]), image)
    text = info(second)["infotexts"][0]
    assert ('Hires sampler: DPM++ 2M, Hires schedule type: Karras, Hires prompt: "a green '
            'square, (bright:1.2)", Hires upscale: 1') in text
    png = client.post("/sdapi/v1/png-info", json={"image": second.json()["images"][0]})
    parameters = png.json()["parameters"]
    assert (parameters["Hires prompt"], parameters["Hires sampler"],
            parameters["Hires schedule type"], parameters["Hires negative prompt"]) == (
        own["hr_prompt"], "DPM++ 2M", "Karras", "")
    for body, needle in (({"hr_sampler_name": "Euler z"}, "hires sampler: unknown sampler"),
                         ({"sampler_name": "DDIM", "hr_sampler_name": "Euler"},
                          "k-diffusion samplers on both passes")):
        bad = client.post("/sdapi/v1/txt2img", json={"prompt": PROMPT, **hires, **body})
        assert bad.status_code == 422 and needle in bad.text, bad.text


def test_img2img_initial_noise_multiplier(client: Any) -> None:
    """initial_noise_multiplier scales the noise laid over the init latents: 1 is the picture
    without it, bitwise, and no infotext field; 0.5 another picture, "Noise multiplier: 0.5",
    read back by png-info."""
    init = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    body = {"prompt": PROMPT, "steps": 2, "seed": 7, "denoising_strength": 0.8,
            "init_images": [png_b64(Image.fromarray(init))]}

    def img2img(**extra: Any) -> Any:
        response = client.post("/sdapi/v1/img2img", json={**body, **extra})
        assert response.status_code == 200, response.text
        return response

    plain, one = img2img(), img2img(initial_noise_multiplier=1.0)
    assert one.json()["images"] == plain.json()["images"]
    assert "Noise multiplier" not in info(one)["infotexts"][0]
    half = img2img(initial_noise_multiplier=0.5)
    assert not np.array_equal(pixels(half.json()["images"][0]),
                              pixels(plain.json()["images"][0]))
    assert "Noise multiplier: 0.5" in info(half)["infotexts"][0]
    png = client.post("/sdapi/v1/png-info", json={"image": half.json()["images"][0]})
    assert png.json()["parameters"]["Noise multiplier"] == 0.5
    bad = client.post("/sdapi/v1/img2img", json={**body, "initial_noise_multiplier": -1})
    assert bad.status_code == 422 and "initial_noise_multiplier must be" in bad.text

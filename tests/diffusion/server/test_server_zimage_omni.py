"""Z-Image Omni through the server like any model: listed by /sdapi/v1/sd-models, the page's
reference-picture zone shown for it (any number), txt2img with Euler and the CPU noise source
as diffusers' ZImageOmniPipeline draws from the prompt alone (CFG and a negative prompt), and
img2img as its editing, as FLUX.2's and Qwen-Image 2.1's: `init_images` are the condition
pictures in order (the init image fitted to the size, the others as they are), the picture
diffusers' ZImageOmniPipeline(image=[init, reference]), the infotext counting them; a picture
diffusers would refuse (under 64 pixels a side) refused in one line (422) before anything
runs; the body's `cache` (First Block Cache) counted in the infotext."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("fastapi", reason="the server extra is not installed")
import torch
from PIL import Image
from server_support import info, pixels, png_b64, serving
from zimage_tiny import tiny_zimage_omni_pipeline

import gpucore

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)

# diffusers reads condition pictures of 64 pixels a side or more: the init image, fitted to
# the size drawn at, is one
SMALL = {"width": 64, "height": 64, "steps": 2, "seed": 5}
CFG = {"negative_prompt": "a photo of a cat", "cfg_scale": 3, "sampler_name": "Euler",
       "override_settings": {"randn_source": "CPU"}}
TOL = 0.003  # mean |ours - diffusers| in [0, 1]: the PNG's rounding (measured 8.7e-4)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("z-image-omni-server")
    reference = tiny_zimage_omni_pipeline(root)
    # diffusers encodes condition pictures in bfloat16 (for its bfloat16 VAE); its float32
    # VAE here reads them back in float32
    encode = reference.vae.encode
    reference.vae.encode = lambda x, *args, **kwargs: encode(x.float(), *args, **kwargs)
    with serving(root, "z-image-omni") as client:
        yield client, reference


def _diffusers(reference: Any, pictures: list[Image.Image]) -> np.ndarray:
    """diffusers' picture at CFG 3 (its guidance_scale 2); the prompt pieces padded to 64
    tokens (the padding dropped after the causal encoder: the same states)."""
    with torch.no_grad():
        return reference(image=pictures or None, prompt="a red circle",
                         negative_prompt=CFG["negative_prompt"], guidance_scale=2.0,
                         height=SMALL["height"], width=SMALL["width"],
                         num_inference_steps=SMALL["steps"], max_sequence_length=64,
                         generator=torch.Generator().manual_seed(SMALL["seed"]),
                         output_type="np").images[0]


def test_omni_txt2img_through_the_api(served: tuple[Any, Any]) -> None:
    client, reference = served
    names = {item["model_name"] for item in client.get("/sdapi/v1/sd-models").json()}
    assert "z-image-omni" in names
    # the page's "Reference pictures" zone: any number, the init image the first
    assert client.get("/avx/defaults").json()["references"] is None
    # Euler over the Simple schedule at 2 steps is diffusers' schedule and step
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "a red circle", **CFG,
                                                      **SMALL})
    assert response.status_code == 200, response.text
    text = info(response)["infotexts"][0]
    assert "Sampler: Euler, Schedule type: Simple, CFG scale: 3, Seed: 5" in text
    ours = pixels(response.json()["images"][0]) / np.float32(255)
    assert np.abs(ours - _diffusers(reference, [])).mean() < TOL


def _pictures() -> list[Image.Image]:
    """The init image at the output's size and a reference of another size."""
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (SMALL["height"], SMALL["width"], 3),
                                         dtype=np.uint8)),
            Image.fromarray(rng.integers(0, 256, (64, 72, 3), dtype=np.uint8))]


def test_omni_img2img_is_the_edit(served: tuple[Any, Any]) -> None:
    client, reference = served
    pictures = _pictures()
    body = {"prompt": "a red circle", "init_images": [png_b64(p) for p in pictures], **CFG,
            **SMALL}
    response = client.post("/sdapi/v1/img2img", json=body)
    assert response.status_code == 200, response.text
    assert "Reference images: 2" in info(response)["infotexts"][0]
    ours = pixels(response.json()["images"][0]) / np.float32(255)
    assert np.abs(ours - _diffusers(reference, pictures)).mean() < TOL
    # the further reference visibly matters: the picture of the init image alone is far off
    # (measured 0.13)
    assert np.abs(ours - _diffusers(reference, pictures[:1])).mean() > 5 * TOL


def test_omni_step_cache_through_the_api(served: tuple[Any, Any]) -> None:
    """The body's `cache` on an edit: First Block Cache runs (a threshold no step's change
    reaches after the first: 1 of 2 computed, as the infotext counts); TeaCache, whose
    tables are FLUX's and Wan's, a 4xx saying what Omni runs."""
    client, _ = served
    body = {"prompt": "a red circle", "init_images": [png_b64(_pictures()[0])], **CFG,
            **SMALL}
    response = client.post("/sdapi/v1/img2img", json={**body, "cache": "fbc:9"})
    assert response.status_code == 200, response.text
    assert 'Cache: "fbc 9, 1/2 steps computed"' in info(response)["infotexts"][0]
    response = client.post("/sdapi/v1/img2img", json={**body, "cache": "teacache"})
    assert 400 <= response.status_code < 500 and "it runs fbc" in response.text


@pytest.mark.parametrize("size, says", [
    ((48, 64), "48x64: Z-Image Omni models read condition pictures of 64 pixels a side"),
    ((600, 64), "600x64: Z-Image Omni models read condition pictures of aspect ratios up to 8"),
])
def test_omni_refuses_pictures_diffusers_refuses(served: tuple[Any, Any],
                                                 size: tuple[int, int], says: str) -> None:
    client, _ = served
    small = Image.new("RGB", size, (200, 30, 30))
    response = client.post("/sdapi/v1/img2img", json={
        "prompt": "a red circle", "init_images": [png_b64(_pictures()[0]), png_b64(small)],
        **SMALL})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert says in detail and "\n" not in detail, detail

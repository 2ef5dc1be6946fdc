"""/sdapi/v1/interrogate through the WebUI's client (webuiapi against a live tiny server):
DeepDanbooru's tags from a tiny model-resnet_custom_v3.pt with planted scores in the models
folder's torch_deepdanbooru, formatted under the options; Loopback's append_interrogation
"DeepBooru" under the options; the 422 naming the folder when the file is missing, and the
CLIP interrogator's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="test-only reference (extra: reference)")
pytest.importorskip("diffusers", reason="tiny test models are built with diffusers")
webuiapi = pytest.importorskip("webuiapi", reason="the WebUI's client (extra: test)")

from deepdanbooru_ref import planted_deepdanbooru, write_pt  # noqa: E402
from PIL import Image  # noqa: E402
from server_support import tiny_webui  # noqa: E402

import gpucore  # noqa: E402

HAS_DEVICE = bool(gpucore.devices())
# +1: scores about 1 (kept), -1: about 0 (dropped); "rating:" tags are never given
SIGNS = {"smile_(happy)": 1, "cat": -1, "1girl": 1, "rating:safe": 1, "blue_hair": 1}
TAGS = r"1girl, blue hair, smile \(happy\)"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    if not HAS_DEVICE:
        pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)")
    root = tmp_path_factory.mktemp("interrogate")
    folder = root / "models" / "torch_deepdanbooru"
    folder.mkdir(parents=True)
    write_pt(planted_deepdanbooru(SIGNS, shrink=64), folder / "model-resnet_custom_v3.pt")
    with tiny_webui(root, steps=2) as client:
        yield client, folder


def _picture(width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(width)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_deepdanbooru_tags_as_the_webui_formats_them(api: tuple[Any, Path]) -> None:
    client, _ = api
    assert client.interrogate(_picture(90, 60), model="deepdanbooru").info == TAGS


def test_loopback_appends_the_tags_of_each_loops_picture(api: tuple[Any, Path]) -> None:
    client, _ = api
    client.set_options({"deepbooru_use_spaces": False, "deepbooru_filter_tags": "1girl"})
    try:
        result = client.img2img(images=[_picture(32, 40)], prompt="a cat", seed=3, width=32,
                                height=40, denoising_strength=0.9, script_name="Loopback",
                                script_args=[2, 0.6, "Linear", "DeepBooru"])
    finally:
        client.set_options({"deepbooru_use_spaces": True, "deepbooru_filter_tags": ""})
    # the request's prompt and the tags, each loop (not the tags appended again)
    assert result.info["all_prompts"] == [r"a cat, blue_hair, smile_\(happy\)"] * 2


def test_missing_files_are_refused_naming_the_folder(api: tuple[Any, Path]) -> None:
    client, folder = api
    hidden = folder.with_name("elsewhere")
    folder.rename(hidden)
    try:
        response = client.session.post(f"{client.baseurl}/interrogate",
                                       json={"image": webuiapi.raw_b64_img(_picture(8, 8)),
                                             "model": "deepdanbooru"})
    finally:
        hidden.rename(folder)
    assert response.status_code == 422
    assert response.json()["detail"].startswith(f"DeepDanbooru: no .pt file in {folder}")
    response = client.session.post(f"{client.baseurl}/interrogate",
                                   json={"image": webuiapi.raw_b64_img(_picture(8, 8))})
    assert response.status_code == 422 and "model 'clip'" in response.json()["detail"]
    response = client.session.post(f"{client.baseurl}/interrogate",
                                   json={"image": "", "model": "blip"})
    assert response.status_code == 404

"""/sdapi/v1/interrogate through the WebUI's client (webuiapi against a live tiny server):
DeepDanbooru's tags from a tiny model-resnet_custom_v3.pt with planted scores in the models
folder's torch_deepdanbooru, formatted under the options; Loopback's append_interrogation
"DeepBooru" under the options; the 422 naming the folder when the file is missing. The CLIP
interrogator's text: BLIP's caption (a tiny random BLIP file in the models folder's BLIP, under
the options) as transformers decodes it, then the top terms (a tiny random transformers
CLIPModel in the models folder's CLIP, term lists in its interrogate) as transformers ranks
them; Loopback's "CLIP"; the 422 naming the BLIP folder when its file is missing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="test-only reference (extra: reference)")
pytest.importorskip("diffusers", reason="tiny test models are built with diffusers")
webuiapi = pytest.importorskip("webuiapi", reason="the WebUI's client (extra: test)")

from blip_ref import reference_caption, tiny_blip, write_blip  # noqa: E402
from clip_interrogate_ref import reference_ranks, write_clip_model, write_terms  # noqa: E402
from deepdanbooru_ref import planted_deepdanbooru, write_pt  # noqa: E402
from PIL import Image  # noqa: E402
from server_support import tiny_webui  # noqa: E402

# +1: scores about 1 (kept), -1: about 0 (dropped); "rating:" tags are never given
SIGNS = {"smile_(happy)": 1, "cat": -1, "1girl": 1, "rating:safe": 1, "blue_hair": 1}
TAGS = r"1girl, blue hair, smile \(happy\)"
# BLIP's options, smaller than the WebUI's defaults (24, 48) for a fast test
BLIP = {"interrogate_clip_num_beams": 2, "interrogate_clip_min_length": 6,
        "interrogate_clip_max_length": 12}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path, Any, Any]]:
    root = tmp_path_factory.mktemp("interrogate")
    folder = root / "models" / "torch_deepdanbooru"
    folder.mkdir(parents=True)
    write_pt(planted_deepdanbooru(SIGNS, shrink=64), folder / "model-resnet_custom_v3.pt")
    clip = write_clip_model(root / "models" / "CLIP")
    write_terms(root / "models" / "interrogate")
    blip = tiny_blip()
    write_blip(root / "models" / "BLIP", blip)
    with tiny_webui(root, steps=2) as client:
        yield client, folder, clip, blip


def _picture(width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(width)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_deepdanbooru_tags_as_the_webui_formats_them(api: tuple[Any, Path, Any, Any]) -> None:
    client = api[0]
    assert client.interrogate(_picture(90, 60), model="deepdanbooru").info == TAGS


def test_loopback_appends_the_tags_of_each_loops_picture(
        api: tuple[Any, Path, Any, Any]) -> None:
    client = api[0]
    client.set_options({"deepbooru_use_spaces": False, "deepbooru_filter_tags": "1girl"})
    try:
        result = client.img2img(images=[_picture(32, 40)], prompt="a cat", seed=3, width=32,
                                height=40, denoising_strength=0.9, script_name="Loopback",
                                script_args=[2, 0.6, "Linear", "DeepBooru"])
    finally:
        client.set_options({"deepbooru_use_spaces": True, "deepbooru_filter_tags": ""})
    # the request's prompt and the tags, each loop (not the tags appended again)
    assert result.info["all_prompts"] == [r"a cat, blue_hair, smile_\(happy\)"] * 2


def test_missing_files_are_refused_naming_the_folder(api: tuple[Any, Path, Any, Any]) -> None:
    client, folder = api[:2]
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
    terms = folder.with_name("interrogate")
    terms.rename(hidden)
    try:  # "clip", the WebUI's default
        response = client.session.post(f"{client.baseurl}/interrogate",
                                       json={"image": webuiapi.raw_b64_img(_picture(8, 8))})
    finally:
        hidden.rename(terms)
    assert response.status_code == 422
    assert response.json()["detail"].startswith(f"model 'clip': no term lists (*.txt) in {terms}")
    blip = folder.with_name("BLIP")
    blip.rename(hidden)
    try:
        response = client.session.post(f"{client.baseurl}/interrogate",
                                       json={"image": webuiapi.raw_b64_img(_picture(8, 8))})
    finally:
        hidden.rename(blip)
    assert response.status_code == 422
    assert response.json()["detail"].startswith(
        f"model 'clip': no BLIP captioner (.pth) in {blip}")
    response = client.session.post(f"{client.baseurl}/interrogate",
                                   json={"image": "", "model": "blip"})
    assert response.status_code == 404


def _interrogation(clip: Any, blip: Any, folder: Path, picture: Image.Image) -> str:
    """The WebUI's CLIP interrogation by the references: BLIP's caption under BLIP's options,
    then ", " and each term."""
    _, caption = reference_caption(
        blip, folder, picture, beams=BLIP["interrogate_clip_num_beams"],
        min_length=BLIP["interrogate_clip_min_length"],
        max_length=BLIP["interrogate_clip_max_length"], size=384)  # the WebUI's size
    assert caption
    return caption + "".join(f", {term}" for term, _ in reference_ranks(clip, picture))


def test_clip_gives_the_caption_and_top_terms(api: tuple[Any, Path, Any, Any]) -> None:
    client, folder, clip, blip = api
    blip_folder = folder.with_name("BLIP")
    client.set_options(BLIP)
    try:
        picture = _picture(50, 70)
        init = Image.fromarray(np.linspace(0, 255, 40 * 32 * 3).reshape(40, 32, 3)
                               .astype(np.uint8))  # a gradient: another caption
        want = _interrogation(clip, blip, blip_folder, picture)
        assert client.interrogate(picture, model="clip").info == want
        result = client.img2img(images=[init], prompt="a cat", seed=3, width=32, height=40,
                                denoising_strength=0.9, script_name="Loopback",
                                script_args=[1, 0.6, "Linear", "CLIP"])
    finally:
        client.set_options({"interrogate_clip_num_beams": 1, "interrogate_clip_min_length": 24,
                            "interrogate_clip_max_length": 48})
    first = _interrogation(clip, blip, blip_folder, init)
    assert first.split(", ")[0] != want.split(", ")[0]  # the picture matters
    assert result.info["all_prompts"] == [f"a cat, {first}"]

"""ComfyUI's single Wan files on the server: a models directory laid out as ComfyUI users have
it (diffusion_models/ a transformer file, text_encoders/ UMT5, vae/ Wan's VAE) beside a Wan
folder holding none of their weights: GET /avx/video-models lists the file, the folder as its
base and the companions by part; POST /avx/txt2vid naming them makes diffusers' WanPipeline
frames of the same weights; a part left out is a 422 in one line naming the field to give."""

from __future__ import annotations

import base64
import io
import shutil
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("fastapi", reason="the server extra is not installed")
import torch
from fastapi.testclient import TestClient
from PIL import Image, ImageSequence
from safetensors.torch import save_file
from sd_tiny import write_pipeline
from server_support import CachedLoader
from wan_tiny import WAN_VAE_TINY, comfyui_file, tiny_wan_pipeline, torch_state, vae_original_names

import gpucore

RED = "a red cube on a wooden table"
FILES = {"model": "diffusion_models/wan_tiny_fp32.safetensors", "base": "wan-base",
         "text_encoder": "text_encoders/umt5_tiny.safetensors",
         "vae": "vae/wan_2.1_vae.safetensors"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Any]]:
    from diffusion.server import create_app

    root = tmp_path_factory.mktemp("video-files")
    reference = tiny_wan_pipeline(root)
    models = root / "models"
    write_pipeline(models / "tiny-a")
    shutil.copytree(root / "wan", models / "wan-base")
    for part in ("transformer", "text_encoder", "vae"):
        for weights in (models / "wan-base" / part).glob("*.safetensors"):
            weights.unlink()
    for folder in ("diffusion_models", "text_encoders", "vae"):
        (models / folder).mkdir()
    comfyui_file(reference.transformer, models / FILES["model"])
    save_file(torch_state(reference.text_encoder), str(models / FILES["text_encoder"]))
    save_file(vae_original_names(torch_state(reference.vae), WAN_VAE_TINY["num_res_blocks"]),
              str(models / FILES["vae"]))
    app = create_app(model=models / "tiny-a", models_dir=models, outputs=root / "outputs",
                     loader=CachedLoader())
    with TestClient(app) as client:
        yield client, reference
    app.state.worker.stop()


def test_video_models_lists_files_and_companions(served: tuple[TestClient, Any]) -> None:
    client, _ = served
    answer = client.get("/avx/video-models").json()
    kinds = {m["model_name"]: m["kind"] for m in answer["models"]}
    assert kinds == {"wan-base": "folder", "diffusion_models_wan_tiny_fp32": "file"}
    assert [title.split(" [")[0] for title in answer["bases"]] == ["wan-base"]
    assert answer["files"]["text_encoder"] == [FILES["text_encoder"]]
    assert answer["files"]["vae"] == [FILES["vae"]]


@pytest.mark.parametrize(("left_out", "says"), [
    ("base", "is a single file: give base, the Wan diffusers folder"),
    ("vae", "wan-base/vae: no weights in the folder; give them as vae: a file of the models "
            "directory (wan_2.1_vae.safetensors"),
    ("text_encoder", "give them as text_encoder: a file of the models directory"),
])
def test_a_missing_part_is_422(served: tuple[TestClient, Any], left_out: str, says: str) -> None:
    client, _ = served
    body = {**FILES, "prompt": "x", "frames": 1, "width": 32, "height": 32}
    del body[left_out]
    response = client.post("/avx/txt2vid", json=body)
    assert response.status_code == 422 and says in response.text, response.text
    assert "Traceback" not in response.text


def test_unknown_part_is_422(served: tuple[TestClient, Any]) -> None:
    client, _ = served
    body = {**FILES, "vae": "vae/other.safetensors", "prompt": "x", "frames": 1}
    response = client.post("/avx/txt2vid", json=body)
    assert response.status_code == 422 and "vae 'vae/other.safetensors' is not in the models " \
        "directory" in response.text, response.text


def test_txt2vid_from_files(first_device: gpucore.Device, served: tuple[TestClient, Any]
                            ) -> None:
    client, reference = served
    body = {**FILES, "prompt": RED, "frames": 1, "width": 48, "height": 32, "steps": 1,
            "cfg_scale": 4.0, "seed": 3, "format": "webp"}
    response = client.post("/avx/txt2vid", json=body)
    assert response.status_code == 200, response.text
    with Image.open(io.BytesIO(base64.b64decode(response.json()["video"]))) as video:
        ours = np.stack([np.asarray(f.convert("RGB"), np.float32) / 255
                         for f in ImageSequence.Iterator(video)])
    expected = reference(RED, height=32, width=48, num_frames=1, num_inference_steps=1,
                         guidance_scale=4.0, output_type="np",
                         generator=torch.Generator().manual_seed(3)).frames[0]
    assert ours.shape == (1, 32, 48, 3) and np.abs(ours - expected).mean() < 0.01

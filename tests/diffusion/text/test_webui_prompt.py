"""Issue 13's whole example end to end: a WebUI prompt with emphasis, de-emphasis, BREAK, a
LoRA tag and an embedding in the negative prompt, with hires fix, from the CLI and from the
server, on a tiny model; the infotext says all of it as the WebUI writes it."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("diffusers", reason="test-only reference (extra: reference)")
from safetensors.numpy import save_file
from sd_tiny import write_pipeline

import diffusion.cli.main as cli
import gpucore
from diffusion.infotext import read_infotext

PROMPT = "masterpiece, (red fox:1.3), [blurry], <lora:fluffy:0.8>, BREAK snowy forest"
NEGATIVE = "wuggle, lowres"


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny model, a kohya LoRA for two of its layers and a 2-vector embedding."""
    root = tmp_path_factory.mktemp("webui-prompt")
    rng = np.random.default_rng(0)
    loras, embeddings = root / "Lora", root / "embeddings"
    loras.mkdir()
    embeddings.mkdir()
    lora = {}
    for name, width in (("unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q", 64),
                        ("te_text_model_encoder_layers_0_self_attn_q_proj", 32)):
        lora[f"lora_{name}.lora_down.weight"] = rng.normal(0, 0.3, (4, width)).astype(np.float32)
        lora[f"lora_{name}.lora_up.weight"] = rng.normal(0, 0.3, (width, 4)).astype(np.float32)
        lora[f"lora_{name}.alpha"] = np.array(4.0, np.float32)
    save_file(lora, str(loras / "fluffy.safetensors"))
    save_file({"emb_params": rng.normal(0, 0.5, (2, 32)).astype(np.float32)},
              str(embeddings / "wuggle.safetensors"))
    return {"model": write_pipeline(root / "model"), "loras": loras, "embeddings": embeddings}


def _assert_webui_infotext(text: str) -> None:
    prompt, negative, params = text.split("\n")
    assert prompt == PROMPT and negative == f"Negative prompt: {NEGATIVE}"
    assert params.startswith("Steps: 2, Sampler: DPM++ 2M, Schedule type: Karras, ")
    for field in ("Denoising strength: 0.5", "Hires upscale: 1.5", "Hires steps: 1",
                  "Hires upscaler: Latent", 'Lora hashes: "fluffy: ', 'TI hashes: "wuggle: '):
        assert field in params, (field, params)


def test_from_the_cli(fixtures: dict[str, Path], first_device: gpucore.Device,
                      tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fox.png"
    code = cli.main(["txt2img", "--model", str(fixtures["model"]), "--prompt", PROMPT,
                     "--negative-prompt", NEGATIVE, "--lora-dir", str(fixtures["loras"]),
                     "--embeddings-dir", str(fixtures["embeddings"]), "--sampler",
                     "DPM++ 2M", "--steps", "2", "--width", "16", "--height", "16",
                     "--hr-scale", "1.5", "--hr-steps", "1", "--hr-denoise", "0.5",
                     "--seed", "3", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert Image.open(out).size == (24, 24)
    _assert_webui_infotext(read_infotext(out))


def test_from_the_server(fixtures: dict[str, Path]) -> None:
    pytest.importorskip("fastapi", reason="server extra (pip install .[server])")
    from fastapi.testclient import TestClient

    from diffusion.server.api.app import create_app

    app = create_app(model=fixtures["model"], lora_dir=fixtures["loras"],
                     embeddings_dir=fixtures["embeddings"], outputs=fixtures["model"].parent)
    with TestClient(app) as client:
        response = client.post("/sdapi/v1/txt2img", json={
            "prompt": PROMPT, "negative_prompt": NEGATIVE, "sampler_name": "DPM++ 2M",
            "steps": 2, "width": 16, "height": 16, "seed": 3, "enable_hr": True,
            "hr_scale": 1.5, "hr_second_pass_steps": 1, "denoising_strength": 0.5})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        image = Image.open(io.BytesIO(base64.b64decode(body["images"][0])))
        assert image.size == (24, 24)
        _assert_webui_infotext(json.loads(body["info"])["infotexts"][0])
        assert [item["name"] for item in client.get("/sdapi/v1/loras").json()] == ["fluffy"]
        assert "wuggle" in client.get("/sdapi/v1/embeddings").json()["loaded"]


def test_vae_choice_from_the_cli(fixtures: dict[str, Path], first_device: gpucore.Device,
                                 tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--vae decodes with another VAE (a diffusers folder): another picture from the same
    latents, and the infotext names it as the WebUI does (VAE hash, VAE)."""
    from sd_tiny import tiny_vae

    from diffusion.loaders.sd.vae_file import vae_hash

    vae = tmp_path / "other-vae"
    tiny_vae(seed=9).save_pretrained(vae)
    common = ["txt2img", "--model", str(fixtures["model"]), "--prompt", "a fox", "--steps",
              "1", "--width", "16", "--height", "16", "--seed", "4"]
    assert cli.main([*common, "--out", str(tmp_path / "own.png")]) == 0
    assert cli.main([*common, "--vae", str(vae), "--out", str(tmp_path / "other.png")]) == 0
    own, other = (np.asarray(Image.open(tmp_path / name), np.int16)
                  for name in ("own.png", "other.png"))
    assert np.abs(own - other).mean() > 5
    text = read_infotext(tmp_path / "other.png")
    assert f"VAE hash: {vae_hash(vae)}, VAE: other-vae" in text
    assert cli.main([*common, "--vae", str(tmp_path / "none.safetensors")]) == 2
    assert "--vae" in capsys.readouterr().err


def test_hires_and_variation_seed_reproduced_from_the_infotext(
        fixtures: dict[str, Path], first_device: gpucore.Device, tmp_path: Path) -> None:
    """A picture made with hires fix, a variation seed and a LoRA is made again, pixel for
    pixel, from nothing but its infotext (--from-infotext)."""
    model = ["--model", str(fixtures["model"]), "--lora-dir", str(fixtures["loras"])]
    first, again = tmp_path / "first.png", tmp_path / "again.png"
    assert cli.main(["txt2img", *model, "--prompt", "a fox <lora:fluffy:0.5>", "--steps", "2",
                     "--width", "16", "--height", "16", "--seed", "11", "--subseed", "5",
                     "--subseed-strength", "0.4", "--hr-scale", "1.5", "--hr-steps", "1",
                     "--sampler", "Euler a", "--rng", "torch", "--out", str(first)]) == 0
    assert cli.main(["txt2img", *model, "--from-infotext", str(first), "--out",
                     str(again)]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(again)))
    assert read_infotext(first) == read_infotext(again)

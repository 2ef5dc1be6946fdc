"""The WebUI's VAE choice and Forge's hires modules, on tiny SD models: GET /sdapi/v1/sd-vae
lists the VAE files of --models-dir; `sd_vae` (POST /options, or one request's
override_settings) makes the picture the CLI makes with `--vae` that file, "Automatic" takes
the VAE named like the checkpoint, and a request's choice does not outlive it; bad names are
refused with a 422 saying what to send. Forge's `hr_additional_modules` runs the hires pass
with their VAE ("Use same choices": the first pass's, []: the model's own) and writes Forge's
"Hires Module N"."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("fastapi", reason="the server extra is not installed")
from PIL import Image
from server_support import info, pixels, refused_both_ways, write_t5_file, write_vae_file

import gpucore

SMALL = {"prompt": "a red circle", "width": 16, "height": 16, "steps": 2, "seed": 5,
         "sampler_name": "Euler", "cfg_scale": 7}
# the hires fix from a latent upscale: the first pass's VAE never runs, the hires pass's decodes
# (at scale 1 and one step: the cost is the pictures', the passes are the same code at any size)
HIRES = {**SMALL, "enable_hr": True, "hr_scale": 1.0, "hr_upscaler": "Latent",
         "hr_second_pass_steps": 1, "denoising_strength": 0.6}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if not gpucore.devices():
        pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)")
    from fastapi.testclient import TestClient
    from sd_tiny import write_pipeline

    from diffusion import load_pipeline
    from diffusion.pipelines.module_load import load_with_modules
    from diffusion.server import create_app

    pipes: dict[tuple[Path, tuple[Path, ...]], Any] = {}

    def load(path: Path, modules: Any = ()) -> Any:
        """The server's loader, each (model, modules) loaded once: switching back and forth
        is what the tests do most, and here it reuses the first load's weights."""
        key = (Path(path), tuple(Path(m) for m in modules))
        if key not in pipes:
            pipes[key] = (load_with_modules(path, modules, dtype="float32") if modules
                          else load_pipeline(path, dtype="float32"))
        return pipes[key]

    root = tmp_path_factory.mktemp("vae-server")
    models = root / "models"
    write_pipeline(models / "tiny-a")
    shutil.copytree(models / "tiny-a", models / "tiny-b")  # the same weights, another name
    vae_x = write_vae_file(models / "VAE" / "vae-x.safetensors", 21)
    write_vae_file(models / "VAE" / "tiny-b.vae.safetensors", 22)  # "Automatic" for tiny-b
    write_vae_file(models / "VAE" / "ae.safetensors", 23, latent_channels=16,  # FLUX's kind
                   use_quant_conv=False, use_post_quant_conv=False)
    write_t5_file(models / "text_encoder" / "t5-other.safetensors", 12)
    app = create_app(model=models / "tiny-a", models_dir=models, outputs=root / "outputs",
                     max_size=64, loader=load)
    with TestClient(app) as client:
        yield client, app, models, vae_x


def _picture(client: Any, body: dict[str, Any]) -> tuple[np.ndarray, str, dict[str, Any]]:
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    facts = info(response)
    return pixels(response.json()["images"][0]), facts["infotexts"][0], facts


def test_the_vae_files_are_listed_and_automatic_is_the_default(served: Any) -> None:
    client, _, models, _ = served
    listed = client.get("/sdapi/v1/sd-vae")
    assert listed.status_code == 200, listed.text
    assert sorted(listed.json(), key=lambda m: m["model_name"]) == [
        {"model_name": name, "filename": str((models / "VAE" / name).resolve())}
        for name in ("ae.safetensors", "tiny-b.vae.safetensors", "vae-x.safetensors")]
    assert "t5-other.safetensors" in {m["model_name"] for m in client.get(
        "/sdapi/v1/sd-modules").json()}  # a module, but no VAE
    assert client.get("/sdapi/v1/options").json()["sd_vae"] == "Automatic"


def test_a_chosen_vae_makes_the_picture_the_cli_makes(served: Any, tmp_path: Path) -> None:
    """sd_vae for one request, then for all: the pictures `txt2img --vae` makes, the infotext
    naming the file as the WebUI does; the next request is back on the options' VAE."""
    import diffusion.cli.main as cli

    client, app, models, _ = served
    vae = models / "VAE" / "vae-x.safetensors"
    command = ["txt2img", "--model", str(models / "tiny-a"), "--prompt", SMALL["prompt"],
               "--steps", "2", "--width", "16", "--height", "16", "--seed", "5",
               "--sampler", "Euler", "--cfg-scale", "7", "--dtype", "float32"]
    assert cli.main([*command, "--vae", str(vae), "--out", str(tmp_path / "vae.png")]) == 0
    with_vae = np.asarray(Image.open(tmp_path / "vae.png").convert("RGB"))
    own, text, _ = _picture(client, SMALL)
    assert "VAE:" not in text and not np.array_equal(own, with_vae)
    # this request only
    chosen, text, facts = _picture(client, {
        **SMALL, "override_settings": {"sd_vae": "vae-x.safetensors"}})
    np.testing.assert_array_equal(chosen, with_vae)
    assert "VAE: vae-x.safetensors" in text and facts["sd_vae_name"] == "vae-x.safetensors"
    again, text, facts = _picture(client, SMALL)
    np.testing.assert_array_equal(again, own)
    assert "VAE:" not in text and facts["sd_vae_name"] is None
    assert app.state.worker.model.vae is None and app.state.options["sd_vae"] == "Automatic"
    # every request from now on, named by its path as /sd-vae gives it; "None" ends it
    switched = client.post("/sdapi/v1/options", json={"sd_vae": str(vae.resolve())})
    assert switched.status_code == 200, switched.text
    assert client.get("/sdapi/v1/options").json()["sd_vae"] == str(vae.resolve())
    np.testing.assert_array_equal(_picture(client, SMALL)[0], with_vae)
    assert client.post("/sdapi/v1/options", json={"sd_vae": "None"}).is_success
    assert app.state.worker.model.vae is None  # the model's own VAE again (pictured below)
    assert client.post("/sdapi/v1/options", json={"sd_vae": "Automatic"}).is_success


def test_automatic_takes_the_vae_named_like_the_checkpoint(served: Any) -> None:
    """tiny-b (tiny-a's weights) with "Automatic" decodes with tiny-b.vae.safetensors; with
    "None" with its own VAE, as tiny-a does."""
    client, _, _, _ = served
    base = _picture(client, SMALL)[0]
    automatic, text, _ = _picture(client, {
        **SMALL, "override_settings": {"sd_model_checkpoint": "tiny-b"}})
    assert "VAE: tiny-b.vae.safetensors" in text and not np.array_equal(automatic, base)
    own = _picture(client, {**SMALL, "override_settings": {"sd_model_checkpoint": "tiny-b",
                                                           "sd_vae": "None"}})[0]
    np.testing.assert_array_equal(own, base)


@pytest.mark.parametrize(("value", "says"), [
    (3, "sd_vae must be \"Automatic\", \"None\" or a VAE file name"),
    ("nope.safetensors", "is not one of this server's module files (ae.safetensors, "
                         "tiny-b.vae.safetensors, vae-x.safetensors; GET /sdapi/v1/sd-vae lists "
                         "them)"),
    ("ae.safetensors", "is a VAE of 16 latent channels and tiny-a takes 4"),
    ("text_encoder/t5-other.safetensors", "holds no VAE (a text encoder"),
    ("tiny-a", "is a model (GET /sdapi/v1/sd-models lists it)"),
])
def test_bad_vae_choices_are_refused(served: Any, value: Any, says: str) -> None:
    client, app, _, _ = served
    before = dict(app.state.options)
    response = refused_both_ways(client, "sd_vae", value, says, SMALL)
    assert "override_settings.sd_vae" in response.json()["detail"]
    assert app.state.options == before


def test_the_hires_pass_runs_with_its_own_modules(served: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """hr_additional_modules' VAE decodes the hires pass: after a latent upscale, the picture
    the whole request makes with that VAE; after an image upscale it also encodes the upscaled
    picture. "Use same choices" is the first pass's VAE, [] the model's own; Forge's "Hires
    Module N" say which."""
    from diffusion.pipelines.sd import stable_diffusion

    client, _, _, vae_x = served
    plain, text, _ = _picture(client, {**HIRES, "hr_additional_modules": ["Use same choices"]})
    assert text.endswith("Hires Module 1: Use same choices")
    other, text, _ = _picture(client, {**HIRES, "hr_additional_modules": ["vae-x.safetensors"]})
    assert text.endswith("Hires Module 1: vae-x") and "VAE:" not in text
    whole, text, _ = _picture(client, {**HIRES, "override_settings": {
        "sd_vae": "vae-x.safetensors"}})
    assert "Hires Module" not in text  # the field left out: Forge writes none
    np.testing.assert_array_equal(other, whole)
    assert not np.array_equal(other, plain)
    built_in, text, _ = _picture(client, {**HIRES, "hr_additional_modules": [],
                                          "override_settings": {"sd_vae": "vae-x.safetensors"}})
    np.testing.assert_array_equal(built_in, plain)  # the model's own VAE, read again
    assert text.endswith("Hires Module 1: Built-in") and "VAE: vae-x.safetensors" in text
    # from an image upscale the hires pass's VAE encodes the upscaled picture too
    encoders: list[np.ndarray] = []
    encode = stable_diffusion.vae_encode

    def spy(vae: Any, pixels: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        encoders.append(vae.decoder.conv_in.weight.numpy())
        return encode(vae, pixels, *args, **kwargs)

    monkeypatch.setattr(stable_diffusion, "vae_encode", spy)
    _picture(client, {**HIRES, "hr_upscaler": "Nearest",
                      "hr_additional_modules": ["vae-x.safetensors"]})
    assert len(encoders) == 1
    np.testing.assert_array_equal(encoders[0],
                                  vae_x.decoder.conv_in.weight.detach().numpy())


def test_a_hires_vae_is_read_once_for_the_requests_that_name_it(
        served: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusion.pipelines import module_load

    client, _, _, _ = served
    read: list[str] = []
    load = module_load._load_like

    def counted(vae: Any, path: Any) -> Any:
        read.append(Path(path).name)
        return load(vae, path)

    monkeypatch.setattr(module_load, "_load_like", counted)
    # a hires VAE made and kept for another file first (the model's own, read again)
    _picture(client, {**HIRES, "hr_additional_modules": []})
    _picture(client, {**HIRES, "hr_additional_modules": ["tiny-b.vae.safetensors"]})
    read.clear()
    for _ in range(2):
        _picture(client, {**HIRES, "hr_additional_modules": ["vae-x.safetensors"]})
    assert read.count("vae-x.safetensors") == 1, read


@pytest.mark.parametrize(("body", "says"), [
    ({"hr_additional_modules": "vae-x.safetensors"}, "hr_additional_modules must be a list"),
    ({"hr_additional_modules": ["nope.safetensors"]},
     "hr_additional_modules 'nope.safetensors' is not one of this server's module files"),
    ({"hr_checkpoint_name": "tiny-b"}, "a hires pass on another checkpoint than the first"),
    ({"hr_checkpoint_name": "missing"}, "hr_checkpoint_name 'missing' is not one of this"),
])
def test_bad_hires_choices_are_refused(served: Any, body: dict[str, Any], says: str) -> None:
    client, _, _, _ = served
    response = client.post("/sdapi/v1/txt2img", json={**HIRES, **body})
    assert response.status_code == 422 and says in response.json()["detail"], response.text

"""Forge's `forge_additional_modules` switched by clients: /sdapi/v1/sd-modules lists the VAE
and text encoder files of --models-dir (and not as models); a request's override_settings runs
its picture with the modules it names (and on the model its sd_model_checkpoint names) and the
next request is back on the options'; POST /options switches them for every request after;
names outside the models folder, models named as modules and values of the wrong type are
refused with a 422 saying what to send. The model identity the workers keep includes the
modules, in a worker process too; and the loader puts an SD VAE file in place of an SD
model's own, leaving out what the model has no place for."""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("fastapi", reason="the server extra is not installed")
from safetensors.torch import save_file
from server_support import refused_both_ways, write_t5_file, write_vae_file

import gpucore
from diffusion.pipelines.contract import Capabilities

SMALL = {"prompt": "a red circle", "width": 16, "height": 16, "steps": 2, "seed": 5,
         "sampler_name": "Euler"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_flux_dev: tuple[Path, Any]) -> Any:
    if not gpucore.devices():
        pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)")
    from fastapi.testclient import TestClient
    from flow_tiny import bfl_checkpoint

    from diffusion.pipelines.flow.flow_model import FlowModel
    from diffusion.server import create_app

    root = tmp_path_factory.mktemp("modules-server")
    models = root / "models"  # Forge's layout: models in it, modules in VAE/, text_encoder/
    models.mkdir()
    (models / "flux").symlink_to(tiny_flux_dev[0] / "flux", target_is_directory=True)
    shutil.copytree(tiny_flux_dev[0] / "flux", models / "flux-copy")  # another model
    save_file(bfl_checkpoint(tiny_flux_dev[1].transformer, "", bf16=False),
              str(models / "flux1-dev.safetensors"))
    write_vae_file(models / "VAE" / "vae-other.safetensors", 21, use_quant_conv=False,
              use_post_quant_conv=False)
    write_t5_file(models / "text_encoder" / "t5-other.safetensors", 12)
    write_t5_file(root / "elsewhere" / "t5-outside.safetensors", 13)
    app = create_app(model=models / "flux", models_dir=models, outputs=root / "outputs",
                     max_size=64, dtype="float32")
    with pytest.MonkeyPatch.context() as patch, TestClient(app) as client:
        patch.setattr(FlowModel, "max_sequence_length", 16)  # the tiny models' cost is T5's
        yield client, app, models, root


def test_modules_are_listed_apart_from_the_models(served: Any) -> None:
    client, _, models, _ = served
    listed = client.get("/sdapi/v1/sd-modules")
    assert listed.status_code == 200, listed.text
    assert sorted(listed.json(), key=lambda m: m["model_name"]) == [
        {"model_name": "t5-other.safetensors",
         "filename": str((models / "text_encoder" / "t5-other.safetensors").resolve())},
        {"model_name": "vae-other.safetensors",
         "filename": str((models / "VAE" / "vae-other.safetensors").resolve())}]
    names = {m["model_name"] for m in client.get("/sdapi/v1/sd-models").json()}
    assert names == {"flux", "flux-copy", "flux1-dev"}  # the module files are no models
    # a file added later: listed after a refresh, as checkpoints are
    shutil.copy(models / "VAE" / "vae-other.safetensors", models / "VAE" / "vae-late.safetensors")
    try:
        assert client.post("/sdapi/v1/refresh-vae").is_success
        assert "vae-late.safetensors" in {
            m["model_name"] for m in client.get("/sdapi/v1/sd-modules").json()}
    finally:
        (models / "VAE" / "vae-late.safetensors").unlink()
        client.post("/sdapi/v1/refresh-checkpoints")


@pytest.mark.parametrize(("value", "says"), [
    ("t5-other.safetensors", "must be a list of module file names"),
    ([3], "must be a list of module file names"),
    (["nope.safetensors"], "is not one of this server's module files"),
    (["../elsewhere/t5-outside.safetensors"], "is not a file inside this server's models"),
    (["flux1-dev.safetensors"], "a flux-dev transformer, a model rather than a VAE"),
    (["flux"], "is a model (GET /sdapi/v1/sd-models lists it)"),
])
def test_bad_module_choices_are_refused(served: Any, value: Any, says: str) -> None:
    client, app, _, root = served
    before = dict(app.state.options)
    refused_both_ways(client, "forge_additional_modules", value, says, SMALL)
    assert app.state.options == before
    # a real module file, named by its path, but outside the models folder
    outside = str(root / "elsewhere" / "t5-outside.safetensors")
    response = client.post("/sdapi/v1/options", json={"forge_additional_modules": [outside]})
    assert response.status_code == 422 and "--models-dir" in response.json()["detail"]


def test_a_request_runs_with_its_modules_and_options_switch_them(served: Any) -> None:
    from server_support import info, pixels

    client, app, models, _ = served

    def picture(**body: Any) -> tuple[np.ndarray, str]:
        response = client.post("/sdapi/v1/txt2img", json={**SMALL, **body})
        assert response.status_code == 200, response.text
        return pixels(response.json()["images"][0]), info(response)["infotexts"][0]

    base, text = picture()
    assert "Module" not in text
    # this request only: the other T5 (by the full path a Forge page sends; its name counts)
    t5 = str((models / "text_encoder" / "t5-other.safetensors").resolve())
    other, text = picture(override_settings={"forge_additional_modules": [t5]})
    assert text.endswith("Module 1: t5-other") and not np.array_equal(other, base)
    assert app.state.options["forge_additional_modules"] == []
    again, text = picture()  # back on the options' modules
    assert np.array_equal(again, base) and "Module" not in text
    # for every request from now on: the same picture as the override made
    switched = client.post("/sdapi/v1/options",
                           json={"forge_additional_modules": ["t5-other.safetensors"]})
    assert switched.status_code == 200, switched.text
    assert client.get("/sdapi/v1/options").json()["forge_additional_modules"] == [t5]
    assert np.array_equal(picture()[0], other)
    # a VAE by its path inside the models folder, for a FLUX folder (in place of its own)
    switched = client.post("/sdapi/v1/options",
                           json={"forge_additional_modules": ["VAE/vae-other.safetensors"]})
    assert switched.status_code == 200, switched.text
    decoded, text = picture()
    assert text.endswith("Module 1: vae-other") and not np.array_equal(decoded, base)
    assert [p.name for p in app.state.worker.model.modules] == ["vae-other.safetensors"]
    assert client.post("/sdapi/v1/options", json={"forge_additional_modules": []}).is_success
    assert np.array_equal(picture()[0], base)


def test_a_request_runs_on_the_checkpoint_its_override_names(served: Any) -> None:
    """override_settings.sd_model_checkpoint: this request on that model (with the options'
    modules), the next one back on the options' model; an unknown name is refused."""
    from server_support import info

    client, app, _, _ = served
    response = client.post("/sdapi/v1/txt2img", json={
        **SMALL, "override_settings": {"sd_model_checkpoint": "flux-copy"}})
    assert response.status_code == 200, response.text
    assert info(response)["sd_model_name"] == "flux-copy"
    assert "Model: flux-copy" in info(response)["infotexts"][0]
    assert app.state.options["sd_model_checkpoint"] == app.state.server.model.title
    response = client.post("/sdapi/v1/txt2img", json=SMALL)
    assert response.status_code == 200 and info(response)["sd_model_name"] == "flux"
    response = client.post("/sdapi/v1/txt2img", json={
        **SMALL, "override_settings": {"sd_model_checkpoint": "nope"}})
    assert response.status_code == 422 and "not one of this server's models" in response.text


def test_the_hires_pass_of_a_flux_model_takes_the_vae_of_its_modules(served: Any) -> None:
    """hr_additional_modules on a FLUX folder: after a latent upscale their VAE decodes, the
    picture the whole request makes with that VAE module; their T5 leaves the conditioning
    the first pass's, as in Forge (its hires conditioning is made before the first pass unless
    a hires checkpoint is chosen). Forge's "Hires Module N" name them."""
    from server_support import info, pixels

    client, _, _, _ = served
    hires = {**SMALL, "enable_hr": True, "hr_scale": 1.0, "hr_upscaler": "Latent",
             "hr_second_pass_steps": 1, "denoising_strength": 0.6}
    response = client.post("/sdapi/v1/txt2img", json={**hires, "hr_additional_modules": [
        "vae-other.safetensors", "t5-other.safetensors"]})
    assert response.status_code == 200, response.text
    assert info(response)["infotexts"][0].endswith(
        "Hires Module 1: vae-other, Hires Module 2: t5-other")
    whole = client.post("/sdapi/v1/txt2img", json={**hires, "override_settings": {
        "forge_additional_modules": ["vae-other.safetensors"]}})
    assert whole.status_code == 200, whole.text
    np.testing.assert_array_equal(pixels(response.json()["images"][0]),
                                  pixels(whole.json()["images"][0]))


def _fake_loader() -> Any:
    """A loader of fake pipes. It is made here, not at the module's top level: cloudpickle then
    sends it to a worker process by value, not as this module's name, which the process would
    import, diffusers and torch with it (13 s of the test's 15 on 2 cores)."""
    def fake_pipe(path: Path, modules: Any = (), **where: Any) -> Any:
        if Path(path).name == "broken":
            raise ValueError("broken model")
        return SimpleNamespace(modules=[Path(m).name for m in modules], native_size=64,
                               defaults=None, family="flux-dev",
                               capabilities=Capabilities(family="flux-dev", latent_space="flux"))
    return fake_pipe


@pytest.mark.nodevice
@pytest.mark.parametrize("kind", ["thread", "process"])
def test_the_loaded_model_is_kept_by_its_path_and_modules(kind: str) -> None:
    """The same model with other modules is another model: it is loaded (in a worker process
    too, where the switch travels as child.LoadModel), and `planned` says what the queue
    leaves loaded, back to the loaded one when a switch fails."""
    from diffusion.server.catalog.models_dir import ModelEntry
    from diffusion.server.jobs.worker import Worker

    if kind == "process":
        pytest.importorskip("cloudpickle", reason="the process worker sends jobs with it")
        from diffusion.server.jobs.processes import ProcessWorker

        worker: Worker = ProcessWorker(_fake_loader(), adapters=["0"])
    else:
        worker = Worker(_fake_loader())
    try:
        entry = ModelEntry(path=Path("/models/flux"), name="flux", sha256="0" * 64)
        worker.submit_load(entry).result(120)
        with_t5 = replace(entry, modules=(Path("/models/text_encoder/t5-other.safetensors"),))
        future = worker.submit_load(with_t5)
        assert worker.planned == with_t5
        future.result(120)
        assert worker.model == with_t5
        assert worker.submit(lambda: worker.pipe.modules).result(60) == ["t5-other.safetensors"]
        broken = ModelEntry(path=Path("/models/broken"), name="broken", sha256="1" * 64)
        with pytest.raises(ValueError, match="broken model"):
            worker.submit_load(broken).result(120)
        assert worker.planned == with_t5 and worker.model == with_t5
    finally:
        worker.stop()


def test_an_sd_model_takes_a_vae_module_and_leaves_out_the_rest(
        first_device: gpucore.Device, tmp_path: Path) -> None:
    from sd_tiny import write_pipeline

    from diffusion.pipelines.module_load import load_with_modules

    model = write_pipeline(tmp_path / "tiny")
    reference = write_vae_file(tmp_path / "VAE" / "sd-vae.safetensors", 9)
    write_vae_file(tmp_path / "VAE" / "ae16.safetensors", 10, latent_channels=16,
              use_quant_conv=False, use_post_quant_conv=False)
    write_t5_file(tmp_path / "t5.safetensors", 12)
    own = load_with_modules(model, [], device=first_device)
    pipe = load_with_modules(model, [tmp_path / "VAE" / "sd-vae.safetensors",
                                     tmp_path / "VAE" / "ae16.safetensors",
                                     tmp_path / "t5.safetensors"], device=first_device)
    assert Path(pipe.vae_path).name == "sd-vae.safetensors"  # the 16-channel one left out
    state = reference.state_dict()
    for key in ("decoder.conv_in.weight", "post_quant_conv.weight", "encoder.conv_out.bias"):
        np.testing.assert_array_equal(_weight(pipe.vae, key), state[key].numpy(), err_msg=key)
    np.testing.assert_array_equal(_weight(pipe.unet, "conv_in.weight"),
                                  _weight(own.unet, "conv_in.weight"))
    assert not np.array_equal(_weight(pipe.vae, "decoder.conv_in.weight"),
                              _weight(own.vae, "decoder.conv_in.weight"))
    # for a memory mode (offload): the module's VAE goes to host memory as the model's would
    from gpustd.nn.offload import device_bytes

    away = load_with_modules(model, [tmp_path / "VAE" / "sd-vae.safetensors"],
                             device=first_device, offload=True)
    assert device_bytes(away.vae) == device_bytes(away.unet) == 0
    np.testing.assert_array_equal(_weight(away.vae, "decoder.conv_in.weight"),
                                  state["decoder.conv_in.weight"].numpy())


def _weight(model: Any, key: str) -> np.ndarray:
    """The parameter `key` (a dotted path) of one of our models, as numpy."""
    value = model
    for part in key.split("."):
        value = value[int(part)] if part.isdigit() else getattr(value, part)
    return np.asarray(value.numpy())


@pytest.mark.nodevice
def test_a_switch_is_refused_before_its_model_loads(tmp_path: Path) -> None:
    """A request on a checkpoint not loaded (its override_settings', or the one /options is
    still loading) asking what that model's family does not take: 422 with the family's line,
    told from the file's header (pipelines.before_load), before anything is queued; the loader
    never sees the file. FLUX.1 dev runs MagCache, SD3 does not."""
    from fastapi.testclient import TestClient
    from flow_headers import flux_shapes, sd3_shapes, write_header
    from server_support import Background

    from diffusion.server import create_app

    models = tmp_path / "models"
    models.mkdir()
    flux = write_header(models / "flux1-dev.safetensors", flux_shapes())
    write_header(models / "sd3.5_medium.safetensors", sd3_shapes(),
                 prefix="model.diffusion_model.")
    fake, loads, release = _fake_loader(), [], threading.Event()

    def loader(path: Path, **where: Any) -> Any:
        loads.append(Path(path).name)
        if Path(path).name.startswith("sd3"):
            release.wait(60)  # /options' switch, held while requests come
        return fake(path, **where)

    magcache = {**SMALL, "cache": "magcache"}
    says = "step cache magcache: not supported for flow-matching models; it runs fbc"
    with TestClient(create_app(model=flux, models_dir=models, loader=loader)) as client:
        response = client.post("/sdapi/v1/txt2img", json={**magcache, "override_settings": {
            "sd_model_checkpoint": "sd3.5_medium.safetensors"}})
        assert response.status_code == 422 and response.json()["detail"] == says
        assert loads == ["flux1-dev.safetensors"] and client.app.state.worker.pending() == 0
        switching = Background(lambda: client.post("/sdapi/v1/options", json={
            "sd_model_checkpoint": "sd3.5_medium.safetensors"}))
        while loads[-1:] != ["sd3.5_medium.safetensors"]:
            time.sleep(0.01)
        response = client.post("/sdapi/v1/txt2img", json=magcache)
        assert response.status_code == 422 and response.json()["detail"] == says
        assert client.app.state.worker.pending() == 0  # nothing queued behind the load
        release.set()
        assert switching.result().status_code == 200

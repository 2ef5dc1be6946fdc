"""A flow family's single-file transformer through the server, as ComfyUI users keep them
(models/diffusion_models: the original layout's .safetensors and a GGUF of it): listed by
/sdapi/v1/sd-models, run by override_settings.sd_model_checkpoint with the diffusers folder of
its family that the models folder holds (the CLI's --base), the folder's own picture bitwise,
and with its text encoder as ComfyUI keeps it (a Forge module file);
`serve --base` names a folder outside it; without one, a 422 in one line saying which folder
to add where (a Qwen-Image file here). The GGUF under the memory modes: its quantized blocks
loaded straight to host memory, streamed a block at a time, the plain load's picture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("fastapi", reason="the server extra is not installed")
pytest.importorskip("gguf", reason="GGUF files need the gguf package")
from fastapi.testclient import TestClient
from qwenimage_tiny import tiny_qwenimage_transformer
from safetensors.torch import save_file
from server_support import info, pixels
from zimage_tiny import original_layout, tiny_zimage_pipeline

import gpucore
from diffusion.loaders.formats.gguf_write import write_gguf
from diffusion.pipelines.load import load_pipeline
from diffusion.pipelines.observer import Observer
from diffusion.pipelines.sd.memory import MemoryMode
from diffusion.server import create_app
from diffusion.server.catalog.models_dir import ModelRegistry
from gpustd.nn.offload import device_bytes, is_offloaded
from gpustd.nn.quantized import quantized_weights
from gpustd.quant import QuantizedTensor

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)

# CFG 1 and Euler as sent: the file's name does not say Turbo, so its defaults would differ
SMALL = {"prompt": "a red circle", "width": 24, "height": 16, "steps": 2, "seed": 7,
         "cfg_scale": 1.0, "sampler_name": "Euler"}
FILE = "diffusion_models/z_image_finetune.safetensors"
QWEN = "diffusion_models/qwen_image_tiny.safetensors"
SETTINGS = {"prompt": "a red circle", "width": 24, "height": 16, "steps": 2, "seed": 7,
            "sampler": "Euler", "cfg_scale": 1.0}  # SMALL as a GenerationRequest takes it


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("flow-files")
    reference = tiny_zimage_pipeline(root)
    models = root / "models"
    (models / "diffusion_models").mkdir(parents=True)
    (models / "Z-Image-Turbo").symlink_to(root / "z-image-turbo", target_is_directory=True)
    file = models / "diffusion_models" / "z_image_finetune.safetensors"
    save_file(original_layout(reference.transformer), str(file))
    write_gguf(models / "diffusion_models" / "z_image-Q8_0.gguf",
               ((k, v.numpy()) for k, v in original_layout(reference.transformer, "").items()),
               "q8_0", architecture="lumina2")
    # ComfyUI's text encoder file (a causal LM's names under model., lm_head too)
    encoder = {f"model.{k}": v.detach().clone() for k, v in
               reference.text_encoder.state_dict().items()}
    encoder["lm_head.weight"] = encoder["model.embed_tokens.weight"].clone()
    (models / "text_encoders").mkdir()
    save_file(encoder, str(models / "text_encoders" / "qwen_3_4b.safetensors"))
    (models / "vae").mkdir()  # its VAE as a file too (diffusers' names)
    save_file({k: v.detach().clone().contiguous() for k, v in reference.vae.state_dict().items()},
              str(models / "vae" / "ae.safetensors"))
    qwen = {k: v.detach().clone().contiguous()
            for k, v in tiny_qwenimage_transformer().state_dict().items()}
    save_file(qwen, str(models / QWEN))
    app = create_app(model=models / "Z-Image-Turbo", models_dir=models,
                     outputs=root / "outputs", max_size=256)
    with TestClient(app) as client:
        yield client, root, models


def _picture(client: Any, checkpoint: str | None = None) -> np.ndarray:
    body = dict(SMALL)
    if checkpoint is not None:
        body["override_settings"] = {"sd_model_checkpoint": checkpoint}
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    return pixels(response.json()["images"][0])


def test_single_files_run_with_their_folder(served: Any) -> None:
    """The module doc: listed, loaded with the models folder's Z-Image folder, its picture."""
    client, root, models = served
    names = {item["model_name"] for item in client.get("/sdapi/v1/sd-models").json()}
    assert {"Z-Image-Turbo", "diffusion_models_z_image_finetune",
            "diffusion_models_z_image-Q8_0"} <= names
    folder = _picture(client)
    assert folder.std() > 2  # a picture, not a flat field
    response = client.post("/sdapi/v1/txt2img", json={
        **SMALL, "override_settings": {"sd_model_checkpoint": FILE}})
    assert response.status_code == 200, response.text
    assert "Model: z_image_finetune" in info(response)["infotexts"][0]
    np.testing.assert_array_equal(pixels(response.json()["images"][0]), folder)
    # its Qwen3 and VAE as ComfyUI keeps them: module files (Forge's list), not models, read
    # in place of the folder's text encoder and VAE
    assert sorted(m["model_name"] for m in client.get("/sdapi/v1/sd-modules").json()) == [
        "ae.safetensors", "qwen_3_4b.safetensors"]
    assert not any("qwen_3_4b" in name or "ae" == name for name in names)
    response = client.post("/sdapi/v1/txt2img", json={**SMALL, "override_settings": {
        "sd_model_checkpoint": FILE,
        "forge_additional_modules": ["qwen_3_4b.safetensors", "ae.safetensors"]}})
    assert response.status_code == 200, response.text
    text = info(response)["infotexts"][0]
    assert "Module 1: qwen_3_4b" in text and "Module 2: ae" in text, text
    np.testing.assert_array_equal(pixels(response.json()["images"][0]), folder)
    # kept quantized: near it, not equal
    quantized = _picture(client, "diffusion_models/z_image-Q8_0.gguf")
    assert np.abs(quantized.astype(float) - folder).mean() < 2.5
    # serve --base: a folder outside the models folder, first
    registry = ModelRegistry(models_dir=models / "diffusion_models",
                             bases=[root / "z-image-turbo"])
    assert {e.name: e.base for e in registry.entries} == {
        "z_image-Q8_0.gguf": (root / "z-image-turbo").resolve(),
        "z_image_finetune.safetensors": (root / "z-image-turbo").resolve(),
        "qwen_image_tiny.safetensors": None}
    # no folder of its family (a Qwen-Image file): listed, and refused in one line saying
    # what to add where
    titles = [item["title"] for item in client.get("/sdapi/v1/sd-models").json()]
    assert any(t.startswith(QWEN + " [") for t in titles)
    for request in (
            lambda: client.post("/sdapi/v1/options", json={"sd_model_checkpoint": QWEN}),
            lambda: client.post("/sdapi/v1/txt2img", json={
                **SMALL, "override_settings": {"sd_model_checkpoint": QWEN}})):
        response = request()
        detail = response.json()["detail"]
        assert response.status_code == 422 and "\n" not in detail, response.text
        assert "no qwen-image diffusers folder" in detail and "--models-dir" in detail
        assert "--base" in detail


def test_gguf_blocks_stream_from_the_host(served: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The GGUF under --lowvram and --medvram, loaded with `offload` (as the server and the CLI
    load for a memory mode): its quantized blocks go to host memory as GGML blocks as they are
    read (never uploaded by the load, never dequantized to floats) and stream to the GPU a
    block at a time; the picture is the plain GGUF load's (the server's), bitwise."""
    client, root, models = served
    file, folder = models / "diffusion_models" / "z_image-Q8_0.gguf", root / "z-image-turbo"
    expected = _picture(client, "diffusion_models/z_image-Q8_0.gguf")
    quantized = quantized_weights(client.app.state.worker.pipe.pipe.transformer)
    assert quantized  # the GGUF's matrices kept as blocks
    uploads = []  # QuantizedTensor(blocks on the GPU, ...): what from_bytes makes
    init = QuantizedTensor.__init__
    monkeypatch.setattr(QuantizedTensor, "__init__",
                        lambda self, *a, **k: (uploads.append(a[1]), init(self, *a, **k))[1])
    # on the server's device (the default one): the kernels it built serve here too
    model = load_pipeline(file, base=folder, offload=True)
    monkeypatch.undo()
    transformer = model.pipe.transformer
    held = quantized_weights(transformer)
    assert held.keys() == quantized.keys() and not uploads
    assert all(not weight.on_device for weight in held.values())  # on the host, as blocks
    blocks_bytes = sum(weight.nbytes for weight in held.values())
    try:
        for mode in (MemoryMode(lowvram=True), MemoryMode(medvram=True)):
            model.set_memory_mode(mode)
            watch = _OnGpu(model.memory_layout().streamed())
            picture = model.generate(observer=watch, **SETTINGS).images[0]
            np.testing.assert_array_equal(picture, expected, err_msg=str(mode))
            if mode.lowvram:  # a block at a time, as blocks: the model's weights never whole
                assert max(watch.blocks) <= 1 < len(watch.streamed)
                assert quantized_weights(transformer).keys() == quantized.keys()
                assert 0 < max(watch.resident) < blocks_bytes
    finally:
        model.set_memory_mode(MemoryMode())


class _OnGpu(Observer):
    """At the end of each step: the streamed blocks on the GPU, and the bytes of weights."""

    def __init__(self, streamed: list[Any]) -> None:
        self.streamed, self.blocks, self.resident = streamed, [], []

    def on_step(self, done: int, total: int, latents: np.ndarray) -> None:
        self.blocks.append(sum(not is_offloaded(block) for block in self.streamed))
        self.resident.append(sum(device_bytes(block) for block in self.streamed))


def test_serve_base_must_be_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`serve --base` names a diffusers folder: anything else stops serve in one line."""
    import diffusion.cli.main as cli

    assert cli.main(["serve", "--base", str(tmp_path), "--port", "1"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and "--base" in errors[0] and "model_index.json" in errors[0]

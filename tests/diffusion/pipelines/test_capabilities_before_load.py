"""What the registry says a model takes before its weights load (`families.capabilities_of`,
from configs and headers; the command line and the server refuse with it) is what the loaded
pipeline says (`Pipeline.capabilities`), for each family the registry can tell; a single file's
(or GGUF's) header tells what its diffusers folder's config does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flow_headers import flux_shapes, sd3_shapes, write_folder, write_header

from diffusion import load_pipeline
from diffusion.loaders.formats.gguf_file import GGUFFile
from diffusion.loaders.formats.safetensors import SafetensorsFile
from diffusion.pipelines.families import capabilities_of
from diffusion.pipelines.load import DEFAULT_MODEL

# fixture -> the model folder under what it gives
MODELS = {"tiny_flux_dev": "flux", "tiny_flux2_klein": "", "tiny_qwenimage": ""}


@pytest.mark.parametrize("fixture", [None, *MODELS])
def test_the_registry_tells_the_loaded_models_capabilities(
        request: pytest.FixtureRequest, first_device: Any, tmp_path: Path,
        fixture: str | None) -> None:
    if fixture is None:  # the bundled SD 1.x model
        path = DEFAULT_MODEL
    else:
        root, pipe = request.getfixturevalue(fixture)
        path = Path(root) / MODELS[fixture]
    told = capabilities_of(path)
    assert told is not None
    loaded = load_pipeline(path, device=first_device).capabilities
    assert told == loaded
    assert told.family == loaded.family != "unet"  # the SD model's family is read too
    if fixture == "tiny_flux_dev":  # the transformer as BFL's file and city96's GGUF: the same
        from flow_tiny import bfl_checkpoint
        from safetensors.torch import save_file

        from diffusion.loaders.formats.gguf_write import write_gguf

        tensors = bfl_checkpoint(pipe.transformer, "", bf16=False)
        save_file(tensors, str(tmp_path / "flux1-dev.safetensors"))
        write_gguf(tmp_path / "flux1-dev-Q8_0.gguf",
                   ((k, v.numpy()) for k, v in tensors.items()), "q8_0", architecture="flux")
        assert capabilities_of(tmp_path / "flux1-dev.safetensors") == loaded
        assert capabilities_of(tmp_path / "flux1-dev-Q8_0.gguf") == loaded


DEV = {"guidance_embeds": True, "in_channels": 16, "out_channels": None}
# (file name, its tensors, ComfyUI's prefix or none, the diffusers folder of the same model:
# its pipeline and transformer config), (family, guidance, needs a control map, models)
FILES = [
    (("flux1-dev.safetensors", flux_shapes(), "", "FluxPipeline", DEV),
     ("flux-dev", "distilled", False, "flow-matching models")),
    (("flux1-dev-fp8.safetensors", flux_shapes(), "model.diffusion_model.", "FluxPipeline",
      DEV), ("flux-dev", "distilled", False, "flow-matching models")),
    (("flux1-schnell-Q4_0.gguf", flux_shapes(dev=False), "", "FluxPipeline",
      {**DEV, "guidance_embeds": False}), ("flux-schnell", "none", False,
                                          "flow-matching models")),
    (("flux1-canny-dev.safetensors", flux_shapes(in_channels=32), "", "FluxControlPipeline",
      {**DEV, "in_channels": 32, "out_channels": 16}),
     ("flux-dev", "distilled", True, "flow-matching models")),
    (("flux1-fill-dev-Q8_0.gguf", flux_shapes(in_channels=288), "", "FluxFillPipeline",
      {**DEV, "in_channels": 288, "out_channels": 16}),
     ("flux-fill", "distilled", False, "FLUX.1 Fill models")),
    (("flux1-kontext-dev.safetensors", flux_shapes(), "", "FluxKontextPipeline", DEV),
     ("flux-kontext", "distilled", False, "FLUX.1 Kontext models")),
    (("sd3.5_medium.safetensors", sd3_shapes(), "model.diffusion_model.",
      "StableDiffusion3Pipeline", {}), ("sd3", "cfg", False, "flow-matching models")),
    (("sd3.5_large-Q8_0.gguf", sd3_shapes(), "", "StableDiffusion3Pipeline", {}),
     ("sd3", "cfg", False, "flow-matching models")),
    (("Chroma1-HD.safetensors", flux_shapes(chroma=True), "", "ChromaPipeline", {}),
     ("chroma", "cfg", False, "flow-matching models")),
    (("Chroma1-HD-Q8_0.gguf", flux_shapes(chroma=True), "", "ChromaPipeline", {}),
     ("chroma", "cfg", False, "flow-matching models")),
]


@pytest.mark.nodevice
@pytest.mark.parametrize("model, expected", FILES, ids=[case[0][0] for case in FILES])
def test_a_single_file_tells_what_its_folder_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        model: tuple[str, dict[str, tuple[int, ...]], str, str, dict[str, Any]],
        expected: tuple[str, str, bool, str]) -> None:
    """Its header read as its loader reads it (flux_file_config, ...): no tensor data."""
    name, shapes, prefix, pipeline, config = model
    file = write_header(tmp_path / name, shapes, prefix=prefix,
                        architecture="sd3" if pipeline.startswith("StableDiffusion3") else "flux")
    folder = write_folder(tmp_path / "folder", pipeline, config)

    def no_data(*args: object, **kw: object) -> None:
        pytest.fail("a tensor was read before the load")

    for reader, method in ((SafetensorsFile, "_read"), (GGUFFile, "read"), (GGUFFile, "raw")):
        monkeypatch.setattr(reader, method, no_data)
    told = capabilities_of(file)
    assert told is not None and told == capabilities_of(folder)
    assert (told.family, told.guidance, told.control_map, told.models) == expected


@pytest.mark.nodevice
def test_a_file_its_loader_would_refuse_is_left_to_the_load(tmp_path: Path) -> None:
    """A FLUX file without its img_in tensor: only loading names what is wrong."""
    shapes = flux_shapes()
    del shapes["img_in.weight"]
    assert capabilities_of(write_header(tmp_path / "flux1-dev.safetensors", shapes)) is None
    assert capabilities_of(write_header(tmp_path / "whole.safetensors", flux_shapes()))

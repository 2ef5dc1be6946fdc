"""Z-Image Omni's SigLIP2 vision tower read from a diffusers folder (`siglip/` as transformers
saves a Siglip2VisionModel, `siglip_processor/`), transformers 4's `vision_model.` names too,
and the folder faults each named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers", reason="transformers is a test-only reference")
from safetensors.numpy import save_file
from support import assert_close

import gpucore
from diffusion.loaders.errors import WeightsError
from diffusion.loaders.z_image.siglip import siglip2_max_patches, siglip2_weights
from diffusion.models.siglip2 import Siglip2Vision

TINY = {"hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 1,
        "num_attention_heads": 2, "patch_size": 2, "num_patches": 9}


def _folder(root: Path, *, prefix: str = "", processor: dict | None = None) -> Path:
    """A Z-Image Omni folder holding only the SigLIP2 parts (a random tower, its pooling head
    included), its weights' names under `prefix`."""
    import torch
    from transformers import Siglip2VisionConfig, Siglip2VisionModel

    torch.manual_seed(0)
    model = Siglip2VisionModel(Siglip2VisionConfig(**TINY)).eval()
    (root / "siglip").mkdir(parents=True)
    model.config.save_pretrained(root / "siglip")
    save_file({prefix + k: v.detach().numpy() for k, v in model.state_dict().items()},
              str(root / "siglip" / "model.safetensors"))
    (root / "siglip_processor").mkdir()
    (root / "siglip_processor" / "preprocessor_config.json").write_text(json.dumps(
        processor or {"image_processor_type": "Siglip2ImageProcessor", "max_num_patches": 12,
                      "patch_size": 2, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    (root / "model_index.json").write_text(json.dumps({"_class_name": "ZImageOmniPipeline"}))
    return root


def _states(model: object, inputs: dict) -> np.ndarray:
    import torch

    h, w = (int(v) for v in inputs["spatial_shapes"][0])
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(np.asarray(v)) for k, v in inputs.items()})
    return out.last_hidden_state[0, :h * w].reshape(h, w, -1).numpy()


@pytest.mark.parametrize("prefix", ["", "vision_model."])
def test_folder_tower_equals_transformers(tmp_path: Path, first_device: gpucore.Device,
                                          prefix: str) -> None:
    """The folder's tower and max_num_patches give transformers' states for a 11x17 picture
    (transformers 5's names and transformers 4's `vision_model.` ones)."""
    from transformers import Siglip2VisionModel
    from transformers.models.siglip2.image_processing_pil_siglip2 import (
        Siglip2ImageProcessorPil,
    )

    root = _folder(tmp_path, prefix=prefix)
    weights = siglip2_weights(root, dtype="float32")
    limit = siglip2_max_patches(root)
    assert limit == 12
    ours = Siglip2Vision.from_state_dict(weights, weights.config, np.float32,
                                         device=first_device, max_num_patches=limit)
    image = np.random.default_rng(1).integers(0, 256, (11, 17, 3), dtype=np.uint8)
    got, grid = ours.encode(image)
    reference = Siglip2VisionModel.from_pretrained(root / "siglip").eval()
    processor = Siglip2ImageProcessorPil(patch_size=2, max_num_patches=limit)
    expected = _states(reference, dict(processor(images=[image], return_tensors="np")))
    assert grid == expected.shape[:2]
    assert_close(got.numpy(), expected, tol=1e-5)


def test_folder_faults_are_named(tmp_path: Path) -> None:
    root = _folder(tmp_path / "a", processor={"image_mean": [0.48, 0.46, 0.41]})
    with pytest.raises(WeightsError, match=r"preprocessor_config\.json: image_mean "
                                           r"\[0\.48, 0\.46, 0\.41\] is not supported"):
        siglip2_max_patches(root)
    (root / "siglip" / "config.json").write_text(json.dumps({**TINY, "patch_size": 4}))
    with pytest.raises(WeightsError, match=r"model\.safetensors: embeddings\.patch_embedding"
                                           r"\.weight reads 12 features, not a 4x4 patch's"):
        siglip2_weights(root)
    with pytest.raises(WeightsError, match=r"siglip_processor/preprocessor_config\.json: "
                                           r"required file is missing"):
        (root / "siglip_processor" / "preprocessor_config.json").unlink()
        siglip2_max_patches(root)

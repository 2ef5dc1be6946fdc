"""HunyuanVideo 1.5's diffusers folders (a tiny HunyuanVideo15ImageToVideoPipeline's, saved by
diffusers): what loads (the Qwen2_5_VLTextModel's bare tensor names, ByT5, SigLIP and its
processor settings, the guider's and scheduler's configs), the family told from
model_index.json, and a folder short of a part refused in one line naming it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from diffusion.loaders import WeightsError
from diffusion.loaders.hunyuan_video15 import (
    hunyuan_video15_family,
    hunyuan_video15_image_to_video,
    load_hunyuan_video15_folder,
)

pytestmark = pytest.mark.nodevice


def test_image_to_video_folder(tiny_hunyuan_video15_i2v: tuple[Path, Any]) -> None:
    folder = tiny_hunyuan_video15_i2v[0]
    assert hunyuan_video15_family(folder) == "hunyuan-video-1.5"
    assert hunyuan_video15_image_to_video(folder)
    weights = load_hunyuan_video15_folder(folder)
    assert weights.image_to_video and weights.image_encoder is not None
    assert "vision_model.post_layernorm.weight" in weights.image_encoder
    assert weights.processor_config is not None
    assert weights.processor_config["size"] == {"height": 28, "width": 28}
    assert weights.text_encoder is not None and "embed_tokens.weight" in weights.text_encoder
    assert weights.text_encoder.config["hidden_size"] == 40
    assert weights.text_encoder_2 is not None and weights.text_encoder_2.config["d_model"] == 32
    assert weights.guider == {**weights.guider, "_class_name": "ClassifierFreeGuidance",
                              "guidance_scale": 6.0}
    assert weights.scheduler_config["shift"] == 5.0
    assert weights.transformer is not None and weights.transformer.config["target_size"] == 32


def test_missing_parts_refused(tiny_hunyuan_video15_i2v: tuple[Path, Any],
                               tmp_path: Path) -> None:
    folder = tmp_path / "hv15"
    shutil.copytree(tiny_hunyuan_video15_i2v[0], folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "image_encoder": [None,
                                                                                   None]}))
    with pytest.raises(WeightsError, match="has no 'image_encoder' component"):
        load_hunyuan_video15_folder(folder)
    (folder / "model_index.json").write_text(json.dumps(index))
    shutil.rmtree(folder / "text_encoder_2")
    with pytest.raises(WeightsError, match="text_encoder_2"):
        load_hunyuan_video15_folder(folder)
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name":
                                                         "WanPipeline"}))
    assert hunyuan_video15_family(folder) is None

"""An LTX-2 folder told apart by its model_index.json (LTX2Pipeline; its image-to-video
pipeline's folders are not this family's), and folders that are not one whole refused in one
line naming the file. (What loads from a whole folder: tests/diffusion/pipelines/
test_ltx2_pipeline.py, on diffusers' own save_pretrained.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffusion.loaders.errors import WeightsError
from diffusion.loaders.ltx2 import load_ltx2_folder, ltx2_family

PARTS = ("transformer", "vae", "audio_vae", "vocoder", "text_encoder", "connectors",
         "tokenizer", "scheduler")


def _index(root: Path, cls: str = "LTX2Pipeline", drop: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    index = {"_class_name": cls, **{p: ["diffusers", "X"] for p in PARTS if p != drop}}
    (root / "model_index.json").write_text(json.dumps(index))
    return root


def test_family(tmp_path: Path) -> None:
    assert ltx2_family(_index(tmp_path / "t2v")) == "ltx-2"
    assert ltx2_family(_index(tmp_path / "i2v", "LTX2ImageToVideoPipeline")) is None
    assert ltx2_family(tmp_path / "t2v" / "model_index.json") is None  # a file
    assert ltx2_family(tmp_path / "missing") is None


def test_broken_folders_refused(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"no model_index\.json; give an LTX-2 diffusers"):
        load_ltx2_folder(tmp_path)
    with pytest.raises(WeightsError, match="'LTX2ImageToVideoPipeline' is not a LTX2Pipeline"):
        load_ltx2_folder(_index(tmp_path / "i2v", "LTX2ImageToVideoPipeline"))
    with pytest.raises(WeightsError, match="has no 'vocoder' component"):
        load_ltx2_folder(_index(tmp_path / "short", drop="vocoder"))
    root = _index(tmp_path / "unipc")
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "UniPCMultistepScheduler"}))
    with pytest.raises(WeightsError, match="a UniPCMultistepScheduler; LTX-2 runs "
                                           "FlowMatchEulerDiscreteScheduler"):
        load_ltx2_folder(root)

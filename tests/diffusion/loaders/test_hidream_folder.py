"""HiDream-I1 folders before any weight loads (host logic on hand-written folders): the family
told from model_index.json, the variant and its defaults from the name or the scheduler
(Full's UniPC, Dev's shift 6, Fast's 3), a single file's defaults from its name, and the
folder loader's one-line errors (another pipeline, no Llama, a Llama folder that is not)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffusion.loaders.errors import WeightsError
from diffusion.loaders.hidream import hidream_family, load_hidream_folder
from diffusion.pipelines.flow.hidream_model import (
    HIDREAM_DEFAULTS,
    hidream_defaults,
    hidream_variant,
)

pytestmark = pytest.mark.nodevice

_INDEX = {"_class_name": "HiDreamImagePipeline",
          **{name: ["x", "y"] for name in (
              "transformer", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2",
              "text_encoder_3", "tokenizer_3", "scheduler")},
          "text_encoder_4": [None, None], "tokenizer_4": [None, None]}


def _folder(root: Path, name: str, scheduler: dict[str, object]) -> Path:
    folder = root / name
    (folder / "scheduler").mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps(_INDEX))
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler))
    for tokenizer in ("tokenizer", "tokenizer_2", "tokenizer_3"):
        (folder / tokenizer).mkdir()
        (folder / tokenizer / "tokenizer.json").write_text("{}")
    return folder


def test_variants_and_defaults(tmp_path: Path) -> None:
    unipc = {"_class_name": "UniPCMultistepScheduler", "use_flow_sigmas": True,
             "flow_shift": 3.0}
    cases = {"HiDream-I1-Full": ({"_class_name": "FlowMatchLCMScheduler", "shift": 3.0}, "full"),
             "HiDream-I1-Dev": ({"_class_name": "FlowMatchLCMScheduler", "shift": 3.0}, "dev"),
             "HiDream-I1-Fast": (unipc, "fast"),  # the name wins over the scheduler
             "mine-a": (unipc, "full"),
             "mine-b": ({"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 6.0}, "dev"),
             "mine-c": ({"_class_name": "FlowMatchLCMScheduler", "shift": 3.0}, "fast")}
    for name, (scheduler, variant) in cases.items():
        folder = _folder(tmp_path, name, scheduler)
        assert hidream_family(folder) == "hidream"
        assert hidream_variant(folder) == variant, name
        assert hidream_defaults(folder, "hidream") == HIDREAM_DEFAULTS[variant]
    assert (HIDREAM_DEFAULTS["full"].steps, HIDREAM_DEFAULTS["full"].cfg_scale) == (50, 5.0)
    assert (HIDREAM_DEFAULTS["dev"].steps, HIDREAM_DEFAULTS["dev"].cfg_scale) == (28, 1.0)
    assert (HIDREAM_DEFAULTS["fast"].steps, HIDREAM_DEFAULTS["fast"].cfg_scale) == (16, 1.0)
    for name, variant in (("hidream_i1_fast_bf16.safetensors", "fast"),
                          ("hidream_i1_dev_fp8.safetensors", "dev"), ("mine.safetensors", "full")):
        (tmp_path / name).write_bytes(b"")
        assert hidream_defaults(tmp_path / name, "hidream") == HIDREAM_DEFAULTS[variant]


def test_folder_errors(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "HiDream-I1-Full", {})
    with pytest.raises(WeightsError, match=r"has no text_encoder_4 \(Llama-3\.1-8B-Instruct"):
        load_hidream_folder(folder)
    (tmp_path / "llama").mkdir()
    with pytest.raises(WeightsError, match=r"not a Llama 3\.1 folder"):
        load_hidream_folder(folder, llama=tmp_path / "llama")
    other = tmp_path / "flux"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    assert hidream_family(other) is None
    with pytest.raises(WeightsError, match="is not a HiDreamImagePipeline"):
        load_hidream_folder(other)

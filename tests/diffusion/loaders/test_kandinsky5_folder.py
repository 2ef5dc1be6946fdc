"""Kandinsky 5 diffusers folders (the tiny random Kandinsky5T2IPipeline diffusers'
save_pretrained writes): the components as diffusers holds them, the text encoders and
tokenizers read back from the folder encoding a prompt as the saved pipeline does, the family
check, and the one-line errors of broken folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from kandinsky5_text_tiny import tiny_kandinsky5_folder, tiny_qwen2vl_processor

import gpucore
from diffusion.loaders import WeightsError
from diffusion.loaders.kandinsky5 import kandinsky5_family, load_kandinsky5_folder
from diffusion.models.clip import CLIPTextModel
from diffusion.models.kandinsky5_prompt import encode
from diffusion.models.llm import LLMTextModel
from diffusion.text.llm_tokenizer import LLMTokenizer
from diffusion.text.tokenizer import CLIPTokenizer


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_kandinsky5_folder(tmp_path_factory.mktemp("kandinsky5"))


@pytest.fixture(scope="module")
def pipe(folder: Path) -> Any:
    """The saved folder as diffusers loads it (the Qwen2VLProcessor over its tokenizer/'s
    files given: loading the processor needs the image and video processors' torchvision)."""
    import diffusers

    return diffusers.Kandinsky5T2IPipeline.from_pretrained(
        folder, tokenizer=tiny_qwen2vl_processor(folder / "tokenizer"))


def test_components_as_diffusers_holds_them(folder: Path, pipe: Any) -> None:
    """Each component's config and tensors: the transformer's and VAE's as diffusers' (names,
    values), the Qwen language model's and CLIP's without their wrappers' prefixes, float16
    on request; the folders of both tokenizers, the scheduler's config, the family."""
    weights = load_kandinsky5_folder(folder)
    assert kandinsky5_family(folder) == "kandinsky-5"
    assert weights.transformer is not None and weights.text_encoder is not None
    for ours, theirs in ((weights.transformer, pipe.transformer), (weights.vae, pipe.vae)):
        expected = theirs.state_dict()
        assert set(ours) == set(expected)
        assert ours.config["in_text_dim"] == 40 if ours is weights.transformer else True
        name = sorted(expected)[-1]
        np.testing.assert_array_equal(ours[name], expected[name].numpy())
    assert weights.text_encoder.config["model_type"] == "qwen2_5_vl_text"
    assert "layers.0.self_attn.q_proj.bias" in weights.text_encoder
    assert not any(k.startswith(("visual.", "lm_head.")) for k in weights.text_encoder)
    assert "final_layer_norm.weight" in weights.text_encoder_2
    assert (weights.tokenizer_dir, weights.tokenizer_2_dir) == (folder / "tokenizer",
                                                                folder / "tokenizer_2")
    assert weights.scheduler_config["shift"] == 3.0
    half = load_kandinsky5_folder(folder, dtype="float16")
    assert half.text_encoder_2 is not None
    assert half.text_encoder_2["final_layer_norm.weight"].dtype == np.float16


def test_folder_encodes_as_diffusers(folder: Path, pipe: Any,
                                     first_device: gpucore.Device) -> None:
    """The text encoders and tokenizers read from the folder (tokenizer.json files alone, as
    transformers 5 saves them) encode a prompt as the loaded pipeline does."""
    weights = load_kandinsky5_folder(folder)
    assert weights.text_encoder is not None
    qwen = LLMTextModel(weights.text_encoder.config, device=first_device)
    qwen.load_state_dict(weights.text_encoder)
    clip = CLIPTextModel(weights.text_encoder_2.config, device=first_device)
    clip.load_state_dict(weights.text_encoder_2)
    states, pooled = encode(qwen, LLMTokenizer(weights.tokenizer_dir), clip,
                            CLIPTokenizer.from_pretrained(weights.tokenizer_2_dir),
                            "a red circle on a blue background")
    with torch.no_grad():
        expected, expected_pooled, _ = pipe.encode_prompt("a red circle on a blue background",
                                                          device=torch.device("cpu"))
    np.testing.assert_allclose(states, expected.numpy(), atol=3e-6 * expected.abs().max().item())
    np.testing.assert_allclose(pooled, expected_pooled.numpy(),
                               atol=2e-6 * expected_pooled.abs().max().item())


def _broken(folder: Path, tmp_path: Path, change: Any) -> Path:
    """A copy of `folder` (its small files; the weights linked) that `change` breaks."""
    copy = tmp_path / "broken"
    shutil.copytree(folder, copy, copy_function=lambda src, dst: (
        Path(dst).symlink_to(src) if src.endswith(".safetensors") else shutil.copy(src, dst)))
    change(copy)
    return copy


def _index(**changes: Any) -> Any:
    def change(root: Path) -> None:
        index = json.loads((root / "model_index.json").read_text())
        (root / "model_index.json").write_text(json.dumps({**index, **changes}))
    return change


@pytest.mark.parametrize(("change", "match"), [
    (_index(_class_name="Kandinsky5T2VPipeline"),
     r"_class_name 'Kandinsky5T2VPipeline' is not a Kandinsky5T2IPipeline"),
    # the editing model's class over a text-to-image transformer (no picture channels)
    (_index(_class_name="Kandinsky5I2IPipeline"),
     r"visual_cond False does not fit a Kandinsky5I2IPipeline"),
    (_index(text_encoder_2=[None, None]), r"has no 'text_encoder_2' component; give the whole"),
    (lambda root: shutil.rmtree(root / "text_encoder_2"),
     r"text_encoder_2: component folder is missing"),
    (lambda root: (root / "tokenizer_2" / "tokenizer.json").unlink(),
     r"tokenizer_2.vocab\.json: required file is missing, and so is tokenizer\.json"),
    (lambda root: (root / "tokenizer" / "tokenizer.json").unlink(),
     r"tokenizer.tokenizer\.json: required file is missing"),
])
def test_broken_folder(folder: Path, tmp_path: Path, change: Any, match: str) -> None:
    """A one-line WeightsError naming what is wrong; the video pipeline's folder is not this
    family."""
    broken = _broken(folder, tmp_path, change)
    with pytest.raises(WeightsError, match=match) as error:
        load_kandinsky5_folder(broken)
    assert "\n" not in str(error.value)
    if "T2V" in match:
        assert kandinsky5_family(broken) is None
    assert kandinsky5_family(folder / "model_index.json") is None

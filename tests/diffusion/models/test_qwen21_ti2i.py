"""Qwen-Image 2.1's prompt embedding with condition pictures against diffusers'
QwenImage21Pipeline.encode_prompt(prompt, image=) (a tiny random Qwen3-VL with a three-block
vision tower and two deepstack levels, and a Qwen3VLProcessor whose image processor is
transformers' Pillow one with Qwen3-VL's settings, built offline)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from PIL import Image
from qwen3vl_tiny import (
    QWEN3VL_PIXELS,
    QWEN3VL_VISION,
    tiny_qwen3vl,
    tiny_qwen3vl_processor,
    tiny_qwen3vl_tokenizer,
)
from sd_tiny import state_dict
from support import assert_close

import gpucore
from diffusion.imaging import condition_picture
from diffusion.loaders.qwen_image import language_model_refs, qwen3_vl_text_config
from diffusion.models.llm import LLMTextModel
from diffusion.models.qwen3_vision import Qwen3VLVisionModel
from diffusion.models.qwen21_prompt import encode_ti2i, ti2i_template, tokenize_ti2i
from diffusion.text.llm_tokenizer import LLMTokenizer

TOL = 2e-5  # float32 through the tower and three layers, measured 9.1e-6 of the largest (4.8)
PROMPTS = ["make it night", "put a small red hat on the cat, watercolor"]


def _pictures() -> list[Any]:
    """An RGBA picture with uneven alpha (composited over white) that the processor resizes,
    an RGB one already at multiples of 32 and a grey one with alpha (LA: the processor's own
    compositing)."""
    rng = np.random.default_rng(6)
    rgba = Image.fromarray(rng.integers(0, 256, (70, 100, 4), dtype=np.uint8), "RGBA")
    grey = Image.fromarray(rng.integers(0, 256, (64, 64, 2), dtype=np.uint8), "LA")
    return [rgba, Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)), grey]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """diffusers' QwenImage21Pipeline holding the tiny text encoder and processor (the other
    parts are not needed to encode), and the tokenizer's folder."""
    import diffusers

    folder = tiny_qwen3vl_tokenizer(tmp_path_factory.mktemp("qwen3vl-tokenizer"))
    processor = tiny_qwen3vl_processor(folder, QWEN3VL_PIXELS)
    encoder = tiny_qwen3vl(processor.tokenizer.convert_tokens_to_ids("<|image_pad|>"),
                           vision=QWEN3VL_VISION)
    pipe = diffusers.QwenImage21Pipeline(scheduler=None, vae=None, text_encoder=encoder,
                                         processor=processor, transformer=None)
    return pipe, folder


def _ours(pipe: Any, device: gpucore.Device) -> tuple[LLMTextModel, Qwen3VLVisionModel]:
    """Our language model and vision tower from the reference's config and state dict as a
    Qwen3-VL file holds them (model.language_model., model.visual.)."""
    weights = state_dict(pipe.text_encoder)
    config = pipe.text_encoder.config.to_dict()
    text = LLMTextModel(qwen3_vl_text_config(config), device=device)
    text.load_state_dict(language_model_refs(weights))
    vision = Qwen3VLVisionModel(config["vision_config"], device=device)
    vision.load_state_dict({k.removeprefix("model.visual."): v for k, v in weights.items()
                            if k.startswith("model.visual.")})
    return text, vision


def _reference(pipe: Any, prompts: list[str], pictures: list[Any]) -> tuple[Any, ...]:
    with torch.no_grad():
        embeds, mask, image_pad = pipe.encode_prompt(prompts, image=pictures,
                                                     device=torch.device("cpu"))
    return embeds.numpy(), None if mask is None else mask.numpy(), image_pad.numpy()


def test_prompt_with_pictures_equals_diffusers(setup: tuple[Any, Path],
                                               first_device: gpucore.Device) -> None:
    """Two prompts of two lengths, each with the three pictures: the template, the expanded pads
    and the ids as the processor gives them, then the embeddings, their mask and the
    image-pad mask as encode_prompt returns them."""
    pipe, folder = setup
    tokenizer = LLMTokenizer(folder)
    pictures = _pictures()
    assert ti2i_template(1) == pipe.prompt_template_ti2i
    inputs = pipe.processor(text=[ti2i_template(3).format(p) for p in PROMPTS],
                            images=[condition_picture(p) for p in pictures] * 2,
                            padding=True, padding_side="left", return_tensors="np")
    rows, drop = tokenize_ti2i(tokenizer, PROMPTS, inputs["image_grid_thw"][:3])
    assert drop == pipe._drop_idx
    for ids, mask, row in zip(inputs["input_ids"], inputs["attention_mask"], rows, strict=True):
        np.testing.assert_array_equal(row, ids[mask.astype(bool)])
    expected = _reference(pipe, PROMPTS, pictures)
    got = encode_ti2i(*_ours(pipe, first_device), tokenizer, PROMPTS, pictures,
                      processor_config=QWEN3VL_PIXELS)
    assert expected[1] is not None and got[1] is not None
    np.testing.assert_array_equal(got[1], expected[1])
    kept = expected[1].astype(bool)
    assert_close(got[0][kept], expected[0][kept], tol=TOL)
    assert not got[0][~kept].any()
    np.testing.assert_array_equal(got[2], expected[2])
    assert got[2].dtype == bool and got[2].sum() == 2 * (6 + 6 + 4)  # 2 prompts x 3 pictures


def test_the_picture_matters(setup: tuple[Any, Path], first_device: gpucore.Device) -> None:
    """One prompt (no mask) with one picture, then with that picture mirrored: the prompt's
    last token, which reads the picture, visibly differs; each equals diffusers'."""
    pipe, folder = setup
    tokenizer = LLMTokenizer(folder)
    text, vision = _ours(pipe, first_device)
    picture = _pictures()[1]
    last = []
    for image in (picture, picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)):
        embeds, mask, image_pad = encode_ti2i(text, vision, tokenizer, PROMPTS[:1], [image],
                                              processor_config=QWEN3VL_PIXELS)
        expected = _reference(pipe, PROMPTS[:1], [image])
        assert mask is None and expected[1] is None
        assert_close(embeds, expected[0], tol=TOL)
        np.testing.assert_array_equal(image_pad, expected[2])
        last.append(embeds[0, -1])
    assert np.abs(last[0] - last[1]).mean() > 0.05 * np.abs(last[1]).mean()


@pytest.mark.nodevice
def test_bad_input(setup: tuple[Any, Path]) -> None:
    """No pictures, a prompt holding a pad, a picture that is not one: one line each."""
    _, folder = setup
    tokenizer = LLMTokenizer(folder)
    grids = np.asarray([[1, 4, 6]])
    with pytest.raises(ValueError, match=re.escape("holds <|image_pad|>")):
        tokenize_ti2i(tokenizer, ["a <|image_pad|> b"], grids)
    with pytest.raises(ValueError, match="more than 40 tokens"):
        tokenize_ti2i(tokenizer, ["a red circle"], grids, max_length=40)
    with pytest.raises(ValueError, match="uint8 HxWx3 / HxWx4"):
        condition_picture(np.zeros((4, 4, 2), np.uint8))
    vision = Qwen3VLVisionModel(QWEN3VL_VISION)
    with pytest.raises(ValueError, match="non-empty list of condition pictures"):
        encode_ti2i(None, vision, tokenizer, ["a"], [])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="patch 14 / merge 2 differ"):
        encode_ti2i(None, vision, tokenizer, ["a"], [np.zeros((8, 8, 3), np.uint8)],  # type: ignore[arg-type]
                    processor_config={"patch_size": 14})


def test_folder_gives_the_tower_and_processor_config(tmp_path: Path,
                                                     first_device: gpucore.Device) -> None:
    """A QwenImage21Pipeline folder's text encoder file gives the vision tower (its
    config.json's vision_config, its model.visual. tensors), which loads into
    Qwen3VLVisionModel and equals the reference's; processor/preprocessor_config.json is
    read where present."""
    import json

    from qwenimage21_tiny import tiny_qwenimage21_pipeline

    from diffusion.loaders.qwen_image import load_qwenimage21_folder
    from diffusion.pipelines.flow.flow_memory import load_network

    pipe = tiny_qwenimage21_pipeline(tmp_path)  # its processor/ has a preprocessor_config
    folder = tmp_path / "qwen-image-2.1"
    (folder / "processor" / "preprocessor_config.json").unlink()
    assert load_qwenimage21_folder(folder).processor_config is None
    (folder / "processor" / "preprocessor_config.json").write_text(json.dumps(QWEN3VL_PIXELS))
    weights = load_qwenimage21_folder(folder)
    assert weights.processor_config == QWEN3VL_PIXELS and weights.vision is not None
    assert "layers.0.mlp.up_proj.weight" in weights.text_encoder  # type: ignore[operator]
    tower = load_network(lambda: Qwen3VLVisionModel(weights.vision.config,  # type: ignore[union-attr]
                                                    device=first_device),
                         weights.vision, device=first_device, offload_to_host=False)
    grid = np.asarray([[1, 4, 6]])
    pixels = np.random.default_rng(7).standard_normal((24, 1536)).astype(np.float32)
    with torch.no_grad():
        expected = pipe.text_encoder.model.visual(torch.from_numpy(pixels),
                                                  torch.from_numpy(grid))
    got = tower(pixels, grid)
    assert_close(got.tokens.numpy(), expected.pooler_output.numpy(), tol=TOL)
    assert_close(got.deepstack[0].numpy(), expected.deepstack_features[0].numpy(), tol=TOL)

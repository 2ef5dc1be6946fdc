"""Prompts with pictures through Qwen2.5-VL: the vision tokens in place of the image pads and
the multimodal rotary positions, against transformers' Qwen2_5_VLModel (a tiny random one)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers", reason="transformers is a test-only reference")
import torch
from sd_tiny import randomized, state_dict
from support import assert_close
from zimage_tiny import QWEN3_TINY

import gpucore
from diffusion.loaders.qwen_image.folder import language_model_config
from diffusion.models.llm import LLMTextModel
from diffusion.models.qwen_vision import Qwen2_5_VisionTransformer
from diffusion.models.qwen_vl_prompt import (
    encode_with_images,
    expand_image_pads,
    multimodal_positions,
)

TOL = 1e-3
IMAGE_TOKEN = 290
VISION = dict(depth=2, hidden_size=16, intermediate_size=24, num_heads=2, window_size=56,
              out_hidden_size=QWEN3_TINY["hidden_size"], fullatt_block_indexes=[1])


def _reference() -> torch.nn.Module:
    import transformers

    text = {k: v for k, v in QWEN3_TINY.items() if k not in ("head_dim", "tie_word_embeddings")}
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e6,
                               "mrope_section": [1, 2, 2]}
    config = transformers.Qwen2_5_VLConfig(text_config=text, vision_config=VISION,
                                           image_token_id=IMAGE_TOKEN)
    return randomized(transformers.Qwen2_5_VLModel(config), 3, scale=0.5).eval()


def _prompt(grids: np.ndarray) -> np.ndarray:
    """Text, picture 1, text, picture 2, text: random ids around runs of image tokens."""
    rng = np.random.default_rng(4)
    ids = [rng.integers(0, 280, 5)]
    for grid in grids:
        ids += [np.full(int(np.prod(grid)) // 4, IMAGE_TOKEN), rng.integers(0, 280, 3)]
    return np.concatenate(ids)


def _ported(reference: torch.nn.Module, device: gpucore.Device
            ) -> tuple[LLMTextModel, Qwen2_5_VisionTransformer]:
    """Our language model and vision tower holding `reference`'s weights."""
    language = LLMTextModel(language_model_config(reference.config.to_dict()), device=device)
    language.load_state_dict({k.removeprefix("language_model."): v
                              for k, v in state_dict(reference).items()
                              if k.startswith("language_model.")})
    vision = Qwen2_5_VisionTransformer(VISION, device=device)
    vision.load_state_dict({k.removeprefix("visual."): v for k, v in state_dict(reference).items()
                            if k.startswith("visual.")})
    return language, vision


def test_prompt_with_pictures_equals_transformers(first_device: gpucore.Device) -> None:
    reference = _reference()
    language, vision = _ported(reference, first_device)
    grids = np.asarray([[1, 6, 10], [1, 4, 4]], np.int64)
    ids = _prompt(grids)
    pixels = np.random.default_rng(5).standard_normal(
        (int(np.prod(grids, axis=1).sum()), 3 * 2 * 14 * 14)).astype(np.float32)
    with torch.no_grad():
        out = reference(input_ids=torch.from_numpy(ids[None]),
                        pixel_values=torch.from_numpy(pixels),
                        image_grid_thw=torch.from_numpy(grids),
                        mm_token_type_ids=torch.from_numpy((ids == IMAGE_TOKEN)[None].astype(int)),
                        output_hidden_states=True)
        expected_positions, _ = reference.get_rope_index(
            torch.from_numpy(ids[None]), torch.from_numpy((ids == IMAGE_TOKEN)[None].astype(int)),
            torch.from_numpy(grids))
    positions = multimodal_positions(ids, IMAGE_TOKEN, grids)
    np.testing.assert_array_equal(positions, expected_positions[:, 0].numpy())
    expected = out.hidden_states[-1].numpy()
    got = encode_with_images(language, vision, ids, image_token_id=IMAGE_TOKEN,
                             pixel_values=pixels, grid_thw=grids).numpy()
    assert_close(got, expected, tol=TOL)
    # the pictures and their positions both matter
    plain = language.hidden_states(ids[None]).numpy()
    assert np.abs(plain - expected).mean() > 10 * TOL
    flat = language.multimodal_hidden_states(
        language.embed_tokens(ids[None].astype(np.int32)).astype(np.float32),
        np.repeat(np.arange(len(ids))[None], 3, axis=0)).numpy()
    assert np.abs(flat - plain).max() < TOL  # 1D positions on every axis: the plain rotary


def test_padded_prompt_with_a_picture_equals_transformers(first_device: gpucore.Device
                                                          ) -> None:
    """Padding inside the prompt (LongCat-Image-Edit's: after the instruction, before the
    template's end) left out of the attention and of the positions' count, every place's
    state (the padding's too) as transformers' with the attention mask."""
    reference = _reference()
    language, vision = _ported(reference, first_device)
    grids = np.asarray([[1, 4, 6]], np.int64)
    ids = np.concatenate([_prompt(grids), np.random.default_rng(7).integers(0, 280, 9)])
    keep = np.ones(len(ids), np.int64)
    keep[-7:-2] = 0  # five pads before the last two tokens
    ids[-7:-2] = 0
    pixels = np.random.default_rng(6).standard_normal(
        (int(np.prod(grids)), 3 * 2 * 14 * 14)).astype(np.float32)

    def transformers_states(mask: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return reference(input_ids=torch.from_numpy(ids[None]),
                             attention_mask=torch.from_numpy(mask[None]),
                             pixel_values=torch.from_numpy(pixels),
                             image_grid_thw=torch.from_numpy(grids),
                             mm_token_type_ids=torch.from_numpy(
                                 (ids == IMAGE_TOKEN)[None].astype(int)),
                             output_hidden_states=True).hidden_states[-1].numpy()

    expected = transformers_states(keep)
    got = encode_with_images(language, vision, ids, image_token_id=IMAGE_TOKEN,
                             pixel_values=pixels, grid_thw=grids, attention_mask=keep).numpy()
    assert_close(got, expected, tol=TOL)
    # the mask matters, for the tokens after the padding
    unmasked = transformers_states(np.ones_like(keep))
    assert np.abs(unmasked[0, -2:] - expected[0, -2:]).mean() > 10 * TOL


def test_expand_image_pads() -> None:
    text = "a<|vision_start|><|image_pad|><|vision_end|>b<|image_pad|>"
    got = expand_image_pads(text, np.asarray([[1, 4, 6], [1, 2, 2]]))
    assert got == "a<|vision_start|>" + "<|image_pad|>" * 6 + "<|vision_end|>b<|image_pad|>"
    with pytest.raises(ValueError, match="2 image slots for 1 pictures"):
        expand_image_pads(text, np.asarray([[1, 4, 6]]))

"""Krea 2's prompt encoding against diffusers' Krea2Pipeline.get_text_hidden_states (a tiny
random Qwen3VLModel and a tiny Qwen tokenizer that splits the template as Qwen3-VL's does; the
pipeline's other parts are not needed to encode), and the padded rows it leaves zero against
Krea2Transformer2DModel (a tiny random one): its output is diffusers'."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from krea2_text_tiny import tiny_krea2_text_encoder, tiny_krea2_tokenizer
from sd_tiny import randomized, state_dict
from support import assert_close
from zimage_tiny import tiny_qwen_tokenizer, transformers_tokenizer

import gpucore
from diffusion.models.krea2_prompt import (
    PREFIX,
    PREFIX_TOKENS,
    SELECT_LAYERS,
    SUFFIX,
    encode,
    select_layers_of,
    tokenize,
)
from diffusion.models.llm import LLMTextModel
from diffusion.text.llm_tokenizer import LLMTokenizer

LENGTH = 24  # max_sequence_length: a 58-token block
# hidden states of the 4-layer encoder, out of order: the embeddings, a middle layer's output
# and the last (transformers hands it through the final norm)
TAPS = (2, 0, 4, 1)
TOL = {np.float32: 5e-6, np.float16: 5e-3}  # measured 8.3e-7 and 1.8e-3 of the largest
# short, empty, filling most of the block, and cut off (over 29 tokens after the prefix)
PROMPTS = ["a red circle", "", "a cat on a mat", "the quick brown fox jumps over the lazy dog "
           "on a blue background with an astronaut riding a horse"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_krea2_tokenizer(tmp_path_factory.mktemp("krea2-tokenizer"))


@pytest.fixture(scope="module")
def pipe(folder: Path) -> Any:
    """diffusers' Krea2Pipeline holding the tiny text encoder and tokenizer, tapping TAPS."""
    import diffusers

    return diffusers.Krea2Pipeline(scheduler=None, vae=None, text_encoder=tiny_krea2_text_encoder(),
                                   tokenizer=transformers_tokenizer(folder), transformer=None,
                                   text_encoder_select_layers=TAPS)


def _ours(pipe: Any, device: gpucore.Device, dtype: Any = np.float32) -> LLMTextModel:
    """Our text encoder from the Qwen3VLModel's text config and its language model's weights
    (under language_model. in a Qwen3VLModel's state dict)."""
    config = pipe.text_encoder.config.text_config.to_dict()
    ours = LLMTextModel({**config, "model_type": "qwen3_vl_text"}, dtype=dtype, device=device)
    weights = state_dict(pipe.text_encoder)
    ours.load_state_dict({k.removeprefix("language_model."): v for k, v in weights.items()
                          if k.startswith("language_model.")})
    return ours


def _reference(pipe: Any, prompt: str) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        states, mask = pipe.get_text_hidden_states(prompt, LENGTH, torch.device("cpu"))
    return states.numpy(), mask.numpy()


def _cut(prompt: str) -> Any:
    """What reading `prompt` must warn: that it was cut (the last of PROMPTS), else nothing."""
    if prompt is not PROMPTS[-1]:
        return contextlib.nullcontext()
    return pytest.warns(UserWarning, match=r"is \d+ tokens past Krea 2's max_sequence_length")


def test_template_and_block_equal_diffusers(pipe: Any, folder: Path) -> None:
    """The template, the dropped count, the default taps as the pipeline holds them, and the
    block's ids and mask as it tokenizes them (the padding in the middle, one prompt cut)."""
    import diffusers

    default = diffusers.Krea2Pipeline(None, None, None, pipe.tokenizer, None)
    assert (PREFIX, SUFFIX, PREFIX_TOKENS, SELECT_LAYERS) == (
        pipe.prompt_template_encode_prefix, pipe.prompt_template_encode_suffix,
        pipe.prompt_template_encode_start_idx, default.text_encoder_select_layers)
    assert dict(default.config)["text_encoder_select_layers"] == SELECT_LAYERS
    tokenizer = LLMTokenizer(folder)
    for prompt in PROMPTS[:-1]:
        text = pipe.tokenizer([PREFIX + prompt], truncation=True, padding="max_length",
                              max_length=LENGTH + PREFIX_TOKENS - 5, return_tensors="np")
        suffix = pipe.tokenizer([SUFFIX], return_tensors="np")
        ids, mask = tokenize(tokenizer, prompt, LENGTH)
        np.testing.assert_array_equal(ids, np.concatenate([text.input_ids, suffix.input_ids], 1))
        np.testing.assert_array_equal(mask, np.concatenate(
            [text.attention_mask, suffix.attention_mask], 1).astype(bool))
        assert mask[0, -5:].all() and mask[0, :PREFIX_TOKENS].all()
    assert not tokenize(tokenizer, PROMPTS[0], LENGTH)[1][0, -6]  # the padding before the suffix
    with _cut(PROMPTS[-1]):
        assert tokenize(tokenizer, PROMPTS[-1], LENGTH)[1].all()  # none left: the prompt is cut


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_states_equal_diffusers(pipe: Any, folder: Path, first_device: gpucore.Device,
                                dtype: Any) -> None:
    """Each prompt's tapped states at its real tokens (run without the padding) and its mask
    as diffusers' (run as the whole padded block); the padded rows zero; padded=False the real
    rows alone."""
    ours, tokenizer = _ours(pipe, first_device, dtype), LLMTokenizer(folder)
    for prompt in PROMPTS:
        expected, expected_mask = _reference(pipe, prompt)
        with _cut(prompt):
            states, mask = encode(ours, tokenizer, prompt, select_layers=TAPS,
                                  max_sequence_length=LENGTH)
            rows, all_kept = encode(ours, tokenizer, prompt, select_layers=TAPS,
                                    max_sequence_length=LENGTH, padded=False)
        assert states.shape == expected.shape == (1, LENGTH, len(TAPS), 40)
        assert states.dtype == np.float32 and mask.dtype == bool
        np.testing.assert_array_equal(mask, expected_mask)
        real = expected[expected_mask]
        assert_close(states[mask], real, tol=TOL[dtype], atol=TOL[dtype] * np.abs(real).max())
        assert not states[~mask].any()
        np.testing.assert_array_equal(rows[0], states[mask])
        assert all_kept.shape == (1, int(mask.sum())) and all_kept.all()


def test_prompt_changes_states(pipe: Any, folder: Path, first_device: gpucore.Device) -> None:
    """The tiny random encoder reads the prompt: two prompts' states differ far past the
    tolerance at the prompt's first token (every tap) and, through attention, at the suffix's
    last token (every tap past the embeddings)."""
    ours, tokenizer = _ours(pipe, first_device), LLMTokenizer(folder)
    a, _ = encode(ours, tokenizer, "a red circle", select_layers=TAPS, max_sequence_length=LENGTH)
    b, _ = encode(ours, tokenizer, "the cat on the mat", select_layers=TAPS,
                  max_sequence_length=LENGTH)
    floor = 100 * TOL[np.float32] * np.abs(a).max()
    assert (np.abs(a[0, 0] - b[0, 0]).max(axis=-1) > floor).all()
    last = np.abs(a[0, -1] - b[0, -1]).max(axis=-1)
    assert (np.delete(last, TAPS.index(0)) > floor).all() and last[TAPS.index(0)] == 0


def test_transformer_ignores_padded_rows(pipe: Any, folder: Path,
                                         first_device: gpucore.Device) -> None:
    """Krea2Transformer2DModel (tiny, random) gives the same velocity from diffusers' states,
    from ours (the padded rows zero) and from the real rows alone without a mask."""
    import diffusers

    model = randomized(diffusers.Krea2Transformer2DModel(
        in_channels=8, num_layers=2, attention_head_dim=16, num_attention_heads=2,
        num_key_value_heads=1, intermediate_size=48, timestep_embed_dim=16, text_hidden_dim=40,
        num_text_layers=len(TAPS), text_num_attention_heads=4, text_num_key_value_heads=2,
        text_intermediate_size=56, axes_dims_rope=(4, 6, 6)), seed=11).eval()
    ours, tokenizer = _ours(pipe, first_device), LLMTokenizer(folder)
    expected, mask = _reference(pipe, PROMPTS[0])
    padded, _ = encode(ours, tokenizer, PROMPTS[0], select_layers=TAPS, max_sequence_length=LENGTH)
    rows, _ = encode(ours, tokenizer, PROMPTS[0], select_layers=TAPS, max_sequence_length=LENGTH,
                     padded=False)
    latents = torch.randn(1, 12, 8, generator=torch.Generator().manual_seed(1))

    def velocity(states: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
        text = states.shape[1]
        positions = pipe.prepare_position_ids(text, 3, 4, torch.device("cpu"))
        with torch.no_grad():
            return model(latents, torch.from_numpy(states), torch.tensor([0.7]), positions,
                         None if keep is None else torch.from_numpy(keep)).sample.numpy()

    reference = velocity(expected, mask)
    other = velocity(*_reference(pipe, PROMPTS[2]))
    assert np.abs(other - reference).max() > 0.1  # the text rows matter (another prompt's)
    for result in (velocity(padded, mask), velocity(rows, None)):
        assert_close(result, reference, tol=1e-5, atol=1e-5 * np.abs(reference).max())


def test_bad_config_and_input(pipe: Any, folder: Path, first_device: gpucore.Device) -> None:
    """One-line ValueErrors for a wrong model_index.json, taps past the encoder's depth, a
    non-Qwen3-VL encoder, a tokenizer without the template's split and a bad length."""
    assert select_layers_of({}) == SELECT_LAYERS
    assert select_layers_of({"text_encoder_select_layers": [1, 3]}, num_text_layers=2) == (1, 3)
    for index, match in (({"text_encoder_select_layers": "2,5"}, "must be a list"),
                         ({"text_encoder_select_layers": [1.5]}, "must be a list"),
                         ({}, r"taps 12 text encoder layers but the transformer reads 4")):
        with pytest.raises(ValueError, match=match):
            select_layers_of(index, num_text_layers=4)
    ours, tokenizer = _ours(pipe, first_device), LLMTokenizer(folder)
    with pytest.raises(ValueError, match=r"must name hidden states 0 \.\. 4 of this 4-layer"):
        encode(ours, tokenizer, "a cat", select_layers=SELECT_LAYERS)
    with pytest.raises(ValueError, match="max_sequence_length must be a positive integer"):
        encode(ours, tokenizer, "a cat", select_layers=TAPS, max_sequence_length=0)
    ours.config = {**ours.config, "model_type": "qwen3"}
    with pytest.raises(ValueError, match="Qwen3-VL's language model"):
        encode(ours, tokenizer, "a cat", select_layers=TAPS)
    plain = LLMTokenizer(tiny_qwen_tokenizer(folder.parent / "plain-qwen"))
    with pytest.raises(ValueError, match=r"splits Krea 2's template into \d+ tokens, not 34"):
        tokenize(plain, "a cat")


def test_left_padding_equals_diffusers(pipe: Any, folder: Path,
                                       first_device: gpucore.Device) -> None:
    """A tokenizer padding on the left (its tokenizer_config.json's padding_side) puts the
    padding first, so the 34 tokens dropped are the pads and the prefix's start (its end
    stays): the real rows and the mask still as diffusers'."""
    ours, tokenizer = _ours(pipe, first_device), LLMTokenizer(folder)
    tokenizer.padding_side = pipe.tokenizer.padding_side = "left"
    try:
        expected, expected_mask = _reference(pipe, PROMPTS[0])
        states, mask = encode(ours, tokenizer, PROMPTS[0], select_layers=TAPS,
                              max_sequence_length=LENGTH)
    finally:
        pipe.tokenizer.padding_side = "right"
    np.testing.assert_array_equal(mask, expected_mask)
    assert mask.all()  # 10 pads and 24 of the prefix's tokens dropped
    real = expected[expected_mask]
    assert_close(states[mask], real, tol=TOL[np.float32],
                 atol=TOL[np.float32] * np.abs(real).max())

"""The LongCat-Image transformer against diffusers' LongCatImageTransformer2DModel on torch CPU
(tiny, random): float32 with an odd text length and a patch grid no tile divides, and float16;
its prompt tokens and positions against LongCatImagePipeline's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from diffusers.pipelines.longcat_image.pipeline_longcat_image import (
    prepare_pos_ids,
    split_quotation,
)
from longcat_image_tiny import LONGCAT_TINY, tiny_longcat_transformer
from sd_tiny import state_dict
from support import assert_close
from zimage_tiny import tiny_qwen_tokenizer, transformers_tokenizer

import gpucore
import gpustd
from diffusion.models.longcat_image import LongCatImageTransformer2DModel
from diffusion.models.longcat_image_prompt import (
    image_positions,
    prompt_tokens,
    text_positions,
)
from diffusion.models.longcat_image_prompt import split_quotation as our_split
from diffusion.text.llm_tokenizer import LLMTokenizer

ROWS, COLUMNS, TEXT = 3, 7, 11  # 21 image patches, 11 text tokens


def _inputs(rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    latents = rng.standard_normal((2, ROWS * COLUMNS, LONGCAT_TINY["in_channels"]))
    text = 2 * rng.standard_normal((2, TEXT, LONGCAT_TINY["joint_attention_dim"]))
    return latents.astype(np.float32), text.astype(np.float32)


def _reference(model: object, latents: np.ndarray, text: np.ndarray, t: np.ndarray
               ) -> np.ndarray:
    txt_ids = prepare_pos_ids(modality_id=0, type="text", start=(0, 0), num_token=TEXT)
    img_ids = prepare_pos_ids(modality_id=1, type="image", start=(512, 512), height=ROWS,
                              width=COLUMNS)
    with torch.no_grad():
        return model(torch.from_numpy(latents), torch.from_numpy(text),  # type: ignore[operator]
                     torch.from_numpy(t), img_ids, txt_ids).sample.numpy()


def test_longcat_transformer(first_device: gpucore.Device) -> None:
    """float32 against diffusers (the positions as LongCatImagePipeline makes them); the text
    visibly matters."""
    reference = tiny_longcat_transformer()
    ours = LongCatImageTransformer2DModel(dict(reference.config), device=first_device)
    ours.load_state_dict(state_dict(reference))
    latents, text = _inputs(np.random.default_rng(3))
    t = np.array([0.83, 0.25], np.float32)
    expected = _reference(reference, latents, text, t)
    got = ours(gpustd.asarray(latents, device=first_device),
               gpustd.asarray(text, device=first_device), t,
               image_positions(ROWS, COLUMNS), text_positions(TEXT)).numpy()
    # the worst element's |error| / (rms + |expected|) measured on lavapipe: 1.1e-6
    assert_close(got, expected, tol=1e-5)
    other = _reference(reference, latents, text[::-1].copy(), t)
    assert np.abs(other - expected).mean() > 0.05 * np.abs(expected).mean()


def test_longcat_transformer_f16(f16_device: gpucore.Device) -> None:
    """float16 weights and activations against the float32 reference."""
    reference = tiny_longcat_transformer()
    ours = LongCatImageTransformer2DModel(dict(reference.config), dtype=np.float16,
                                          device=f16_device)
    ours.load_state_dict(state_dict(reference))
    latents, text = _inputs(np.random.default_rng(4))
    t = np.array([0.5, 0.97], np.float32)
    expected = _reference(reference, latents, text, t)
    got = ours(gpustd.asarray(latents, dtype=np.float16, device=f16_device),
               gpustd.asarray(text, dtype=np.float16, device=f16_device), t,
               image_positions(ROWS, COLUMNS), text_positions(TEXT))
    assert got.dtype == np.float16
    # measured on lavapipe: 3.6e-3 (float16 rounding through every block)
    assert_close(got.numpy().astype(np.float32), expected, tol=1e-2)


def test_longcat_patch_size_refused(first_device: gpucore.Device) -> None:
    with pytest.raises(ValueError, match="patch_size 1"):
        LongCatImageTransformer2DModel({**LONGCAT_TINY, "patch_size": 2}, device=first_device)


QUOTED = ["Please write 'Hello' on the blackboard, don't erase it",
          "a sign reading \u201cOPEN 24h\u201d and \u2018caf\u00e9\u2019 beside it's door",
          'two "quoted" words "here", unquoted \'tail', "plain"]


@pytest.mark.nodevice
def test_split_quotation_is_diffusers() -> None:
    for prompt in QUOTED:
        assert our_split(prompt) == split_quotation(prompt)


@pytest.mark.nodevice
def test_prompt_tokens_are_diffusers(tmp_path: Path) -> None:
    """The ids and mask the text encoder reads (quoted text a character at a time, padded to
    512 inside the template) and the places kept, as LongCatImagePipeline._encode_prompt
    makes them."""
    import diffusers

    folder = tiny_qwen_tokenizer(tmp_path / "tok")
    tokenizer = transformers_tokenizer(folder)
    seen: dict[str, torch.Tensor] = {}

    class Encoder(torch.nn.Module):  # records what it reads; its states are the ids
        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    output_hidden_states: bool) -> object:
            seen.update(ids=input_ids, mask=attention_mask)
            states = input_ids[..., None].float().expand(-1, -1, 2)
            return type("Out", (), {"hidden_states": (states,)})()

    class Reference(diffusers.LongCatImagePipeline):  # the encoder is no diffusers model
        device = torch.device("cpu")

    pipe = Reference(scheduler=None, vae=None, text_encoder=Encoder(), tokenizer=tokenizer,
                     text_processor=None, transformer=None)
    kept_states = pipe._encode_prompt([*QUOTED, "word " * 600])
    ids, mask, kept = prompt_tokens(LLMTokenizer(folder), [*QUOTED, "word " * 600])
    np.testing.assert_array_equal(ids, seen["ids"].numpy())
    np.testing.assert_array_equal(mask, seen["mask"].numpy())
    np.testing.assert_array_equal(ids[:, kept], kept_states[..., 0].numpy())
    assert mask[0, kept].sum() < 512 and mask[-1, kept].all()  # padded; cut at 512

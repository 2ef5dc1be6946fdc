"""SDXL's two text encoders and tokenizers against transformers (tiny random models, torch CPU):
the penultimate hidden states SDXL conditions on, the last layer, the pooled / projected
`text_embeds`, and both tokenizers' ids (CLIP-L pads with <|endoftext|>, OpenCLIP with "!")."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import sdxl_tiny
import torch
from sd_tiny import state_dict
from support import assert_close

import gpucore
from diffusion.models import CLIPTextModel
from diffusion.text.tokenizer import CLIPTokenizer

# f32 through 5 layers: the worst element's |error| / (rms + |expected|) (support.assert_close's
# rule) measured on lavapipe and llvmpipe is 1.6e-6
TOL = 2e-5
PROMPTS = ["a photo of an astronaut riding a horse on mars!", "",
           "word " * 90 + "truncated at 77 tokens"]


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return sdxl_tiny.tiny_paths(tmp_path_factory)


def _reference_ids(tokenizer, prompts):
    return tokenizer(prompts, padding="max_length", max_length=77, truncation=True,
                     return_tensors="np").input_ids


def test_tokenizers_match_transformers(paths):
    """Both tokenizers from the folder, and the bundled vocabulary a single file falls back to,
    give transformers' ids; the second pads with "!" (id 0), the first with <|endoftext|>."""
    pipe = paths.pipes["base"]
    ours = CLIPTokenizer.from_pretrained(paths.base / "tokenizer")
    ours_2 = CLIPTokenizer.from_pretrained(paths.base / "tokenizer_2")
    want = _reference_ids(pipe.tokenizer, PROMPTS)
    want_2 = _reference_ids(pipe.tokenizer_2, PROMPTS)
    np.testing.assert_array_equal(ours(PROMPTS), want)
    np.testing.assert_array_equal(ours_2(PROMPTS), want_2)
    np.testing.assert_array_equal(CLIPTokenizer(pad_token="!")(PROMPTS), want_2)
    assert want[1, 2] == 49407 and want_2[1, 2] == 0 and not np.array_equal(want, want_2)
    refiner_2 = CLIPTokenizer.from_pretrained(paths.refiner / "tokenizer_2")
    np.testing.assert_array_equal(refiner_2(PROMPTS), want_2)


def test_tokenizer_json_only_folder(tmp_path):
    """A tokenizer folder as transformers 5 saves it (tokenizer.json, no vocab.json) with a
    vocabulary of its own (1000 tokens, diffusers' tiny test size), not the bundled one."""
    import json

    import transformers

    from diffusion.text.tokenizer import bundled_vocab

    full, merges = bundled_vocab()
    merges = merges[:486]
    tokens = [t for t, i in sorted(full.items(), key=lambda item: item[1])][:512]
    tokens += ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m)
                                                                      for m in merges))
    reference = transformers.CLIPTokenizer(str(tmp_path / "vocab.json"),
                                           str(tmp_path / "merges.txt"), pad_token="!")
    reference.save_pretrained(tmp_path / "saved")
    assert not (tmp_path / "saved" / "vocab.json").exists()
    ours = CLIPTokenizer.from_pretrained(tmp_path / "saved")
    assert ours.vocab_size == 1000
    np.testing.assert_array_equal(ours(PROMPTS), _reference_ids(reference, PROMPTS))


def _ours(reference, device) -> CLIPTextModel:
    # an in-memory transformers config names no architectures (saving writes them)
    projection = type(reference).__name__ == "CLIPTextModelWithProjection"
    model = CLIPTextModel(reference.config.to_dict(), device=device, with_projection=projection)
    model.load_state_dict(state_dict(reference, strip="text_model."))
    return model


def _ids(paths) -> np.ndarray:
    pipe = paths.pipes["base"]
    ids = np.concatenate([_reference_ids(pipe.tokenizer, PROMPTS[:2]),
                          _reference_ids(pipe.tokenizer_2, PROMPTS[:1])])
    # a row with neither start- nor end-of-text token: argmax(ids) and "first EOS" pool at
    # different places
    no_eos = _reference_ids(pipe.tokenizer_2, PROMPTS[2:])
    no_eos[0, [0, -1]] = 320
    return np.concatenate([ids, no_eos]).astype(np.int32)


@pytest.mark.parametrize("encoder", ["text_encoder", "text_encoder_2", "first_eos"])
def test_encoder_matches_transformers(paths, device: gpucore.Device, encoder: str) -> None:
    """hidden_states[-2] (SDXL's conditioning: clip_skip=1, final_norm=False), the normed last
    layer, and pooled output / text_embeds (last layer at the EOS, projected for encoder 2)."""
    pipe = paths.pipes["base"]
    if encoder == "first_eos":  # a config written after transformers' EOS fix: first EOS id
        import transformers

        config = transformers.CLIPTextConfig(**{**sdxl_tiny.CLIP_SDXL_TINY,
                                                "eos_token_id": 49407})
        reference = transformers.CLIPTextModelWithProjection(config)
        reference.load_state_dict(pipe.text_encoder_2.state_dict())
        reference.eval()
    else:
        reference = getattr(pipe, encoder)
    ours = _ours(reference, device)
    assert ours.has_projection == (encoder != "text_encoder")
    ids = _ids(paths)
    with torch.no_grad():
        out = reference(torch.from_numpy(ids.astype(np.int64)), output_hidden_states=True)
    pooled_ref = out.text_embeds if ours.has_projection else out.pooler_output
    penultimate, pooled = ours.forward_pooled(ids, clip_skip=1, final_norm=False)
    assert_close(penultimate.numpy(), out.hidden_states[-2].numpy(), tol=TOL)
    assert_close(pooled.numpy(), pooled_ref.numpy(), tol=TOL)
    last, pooled_last = ours.forward_pooled(ids)
    assert_close(last.numpy(), out.last_hidden_state.numpy(), tol=TOL)
    assert_close(pooled_last.numpy(), pooled_ref.numpy(), tol=TOL)
    assert_close(ours(ids, clip_skip=1, final_norm=False).numpy(),
                 out.hidden_states[-2].numpy(), tol=TOL)
    # the two EOS conventions differ on the row without an EOS token
    legacy = np.argmax(ids, axis=-1)
    first = np.argmax(ids == 49407, axis=-1)
    assert legacy[-1] != first[-1]


def test_projection_needs_its_dimension(device: gpucore.Device) -> None:
    config = {**sdxl_tiny.CLIP_SDXL_TINY, "projection_dim": None}
    with pytest.raises(ValueError, match="projection_dim"):
        CLIPTextModel(config, device=device, with_projection=True)
    model = CLIPTextModel(config, device=device)  # no architectures: no projection
    assert not model.has_projection and "text_projection.weight" not in model.state_dict()
    with pytest.raises(ValueError, match="clip_skip"):
        model(np.zeros((1, 77), np.int32), clip_skip=5)

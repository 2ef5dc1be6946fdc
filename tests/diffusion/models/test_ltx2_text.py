"""LTX-2's prompt side against transformers and diffusers on torch CPU (tiny random models):
Gemma 3's language model (every hidden state), the packing, LTX2TextConnectors (LTX-2.0 and
2.3), and ltx2_prompt_states against diffusers' own prompt encoding."""

from __future__ import annotations

import types

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from ltx2_text_tiny import (
    CONNECTORS_23_TINY,
    CONNECTORS_TINY,
    GEMMA3_TINY,
    WORDS,
    tiny_connectors,
    tiny_gemma3_text,
    tiny_gemma_tokenizer,
)
from sd_tiny import state_dict
from support import assert_close

import gpucore
from diffusion.models.llm import LLMTextModel
from diffusion.models.ltx2_connectors import LTX2TextConnectors, pack_states
from diffusion.models.ltx2_prompt import ltx2_prompt_states
from diffusion.text.llm_tokenizer import LLMTokenizer
from gpustd import asarray

TOL = 2e-5  # float32 through every layer and both connectors: measured <= 3e-6


def _gemma(device: gpucore.Device, dtype: type = np.float32) -> LLMTextModel:
    reference = tiny_gemma3_text()
    ours = LLMTextModel(reference.config.to_dict(), dtype=dtype, device=device)
    ours.load_state_dict(state_dict(reference))
    return ours


def _left_padded(length: int = 20, pads: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Two prompts of `length` tokens, the second's first `pads` padding (Gemma's side)."""
    ids = np.random.default_rng(0).integers(3, GEMMA3_TINY["vocab_size"], (2, length))
    mask = np.ones((2, length), np.int64)
    mask[1, :pads] = 0
    ids[1, :pads] = 0
    return ids, mask


def _every_layer(ids: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        out = tiny_gemma3_text()(input_ids=torch.from_numpy(ids),
                                 attention_mask=torch.from_numpy(mask), output_hidden_states=True)
    return [h.numpy() for h in out.hidden_states]


def test_gemma3_every_hidden_state(device: gpucore.Device) -> None:
    """Every hidden state (scaled embeddings, each layer's output, the normed last) of a
    left-padded batch within the window, at the real tokens; the local layers' and the
    global layers' rotations differ visibly (a prompt's states change when it moves)."""
    ours = _gemma(device)
    ids, mask = _left_padded()
    expected = _every_layer(ids, mask)
    got = ours.hidden_states_of(ids, mask, range(len(expected)))
    kept = mask.astype(bool)
    for states, reference in zip(got, expected, strict=True):
        assert_close(states.numpy()[kept], reference[kept], tol=TOL)
    alone = ours.hidden_states_of(ids[1:, 6:], None, [2])[0].numpy()  # positions 0..13
    assert_close(alone[0], expected[2][1, 6:], tol=TOL)  # rotations see differences alone


def test_gemma3_past_window_refused(first_device: gpucore.Device) -> None:
    ours = _gemma(first_device)
    ids, _ = _left_padded(length=GEMMA3_TINY["sliding_window"] + 1)
    with pytest.raises(ValueError, match="sliding attention window of 24"):
        ours.hidden_states_of(ids, None, [1])


def test_gemma3_f16(f16_device: gpucore.Device) -> None:
    """float16 weights (norm weights float32): every state to float16 error (measured
    <= 5e-3)."""
    ours = _gemma(f16_device, np.float16)
    ids, mask = _left_padded()
    expected = _every_layer(ids, mask)
    kept = mask.astype(bool)
    for states, reference in zip(ours.hidden_states_of(ids, mask, range(4)), expected,
                                 strict=True):
        assert_close(states.numpy()[kept], reference[kept], tol=1e-2)


@pytest.mark.parametrize("per_token", [False, True], ids=["ltx2", "ltx23"])
def test_pack_equals_diffusers(first_device: gpucore.Device, per_token: bool) -> None:
    """pack_states of a prompt's real rows against diffusers' masked normalisation of the
    left-padded batch (per-layer mean and range, or LTX-2.3's per-token RMS)."""
    from diffusers.pipelines.ltx2.connectors import (
        per_layer_masked_mean_norm,
        per_token_rms_norm,
    )

    states = np.random.default_rng(1).normal(0, 3, (2, 16, 12, 5)).astype(np.float32)
    states[..., 2] += 40.0  # a layer far from the others: its own statistics
    lengths = np.array([16, 9])
    if per_token:
        expected = per_token_rms_norm(torch.from_numpy(states)).flatten(2).numpy()
    else:
        expected = per_layer_masked_mean_norm(torch.from_numpy(states),
                                              torch.from_numpy(lengths), "cpu").numpy()
    for row, n in enumerate(lengths):
        got = pack_states(asarray(states[row:row + 1, 16 - n:], device=first_device),
                          per_token=per_token).numpy()
        assert_close(got[0], expected[row, 16 - n:], tol=1e-5)


@pytest.mark.parametrize("per_modality", [False, True], ids=["ltx2", "ltx23"])
def test_connectors_equal_diffusers(first_device: gpucore.Device, per_modality: bool) -> None:
    """LTX2TextConnectors on packed states of two prompts (13 real tokens left-padded, and
    a full one): every row of the video and audio states (the registers' too), and the mask;
    LTX-2.0's split rotations, LTX-2.3's projections per stream, gated attention and
    interleaved rotations."""
    reference = tiny_connectors(per_modality)
    config = CONNECTORS_23_TINY if per_modality else CONNECTORS_TINY
    ours = LTX2TextConnectors(dict(reference.config), device=first_device)
    ours.load_state_dict(state_dict(reference))
    width = config["caption_channels"] * config["text_proj_in_factor"]
    states = np.random.default_rng(2).normal(0, 1, (2, 32, width)).astype(np.float32)
    mask = np.ones((2, 32), np.int64)
    mask[0, :19] = 0
    with torch.no_grad():
        video, audio, kept = reference(torch.from_numpy(states), torch.from_numpy(mask))
    got = ours(states, mask)
    assert_close(got[0].numpy(), video.numpy(), tol=TOL)
    assert_close(got[1].numpy(), audio.numpy(), tol=TOL)
    np.testing.assert_array_equal(got[2], kept.numpy())
    # the registers matter: the first prompt's rows past its 13 tokens are theirs
    assert np.abs(video.numpy()[0, 13:] - video.numpy()[1, 13:]).mean() > 0.1


PROMPTS = [" a cat walks on the beach ", "waves roll in slowly at sunset"]


def _diffusers_prompt_states(folder) -> tuple:
    """diffusers' LTX2Pipeline._get_gemma_prompt_embeds of PROMPTS (the left-padded block of
    32 tokens, past the window of 24, through transformers) and the connectors."""
    import transformers
    from diffusers import LTX2Pipeline

    pipe = types.SimpleNamespace(
        tokenizer=transformers.PreTrainedTokenizerFast(
            tokenizer_file=str(folder / "tokenizer.json"), pad_token="<pad>"),
        text_encoder=tiny_gemma3_text(), _execution_device=torch.device("cpu"))
    with torch.no_grad():
        embeds, mask = LTX2Pipeline._get_gemma_prompt_embeds(
            pipe, PROMPTS, max_sequence_length=32, device="cpu", dtype=torch.float32)
        assert 4 < mask.sum(1).min() < mask.sum(1).max() < 24
        return tuple(t.numpy() for t in tiny_connectors()(embeds, mask))


def _ours(device: gpucore.Device, dtype: type = np.float32
          ) -> tuple[LLMTextModel, LTX2TextConnectors]:
    connectors = LTX2TextConnectors(dict(tiny_connectors().config), dtype=dtype, device=device)
    connectors.load_state_dict(state_dict(tiny_connectors()))
    return _gemma(device, dtype), connectors


def test_prompt_states_equal_diffusers(first_device: gpucore.Device, tmp_path) -> None:
    """ltx2_prompt_states (real tokens alone through Gemma) against diffusers' prompt
    encoding and connectors; a prompt past the window or past max_sequence_length refused in
    one line."""
    folder = tiny_gemma_tokenizer(tmp_path / "tokenizer")
    video, audio, kept = _diffusers_prompt_states(folder)
    text_model, connectors = _ours(first_device)
    tokenizer = LLMTokenizer(folder)
    got = ltx2_prompt_states(text_model, connectors, tokenizer, PROMPTS, 32)
    assert_close(got[0].numpy(), video, tol=TOL)
    assert_close(got[1].numpy(), audio, tol=TOL)
    np.testing.assert_array_equal(got[2], kept)
    other = ltx2_prompt_states(text_model, connectors, tokenizer, PROMPTS[::-1], 32)
    assert np.abs(other[0].numpy()[0] - got[0].numpy()[0]).mean() > 0.1  # the prompt matters
    assert 24 < len(tokenizer([WORDS], 64, padding="longest")[0][0]) <= 32
    with pytest.raises(ValueError, match="sliding attention window"):
        ltx2_prompt_states(text_model, connectors, tokenizer, WORDS, 32)
    with pytest.raises(ValueError, match="longer than the 16 tokens"):
        ltx2_prompt_states(text_model, connectors, tokenizer, WORDS, 16)


def test_prompt_states_f16(f16_device: gpucore.Device, tmp_path) -> None:
    """float16 Gemma and connectors (float32 streams) against the float32 reference
    (measured <= 5e-3)."""
    folder = tiny_gemma_tokenizer(tmp_path / "tokenizer")
    video, audio, _ = _diffusers_prompt_states(folder)
    got = ltx2_prompt_states(*_ours(f16_device, np.float16), LLMTokenizer(folder), PROMPTS, 32)
    assert_close(got[0].numpy(), video, tol=1e-2)
    assert_close(got[1].numpy(), audio, tol=1e-2)


def test_gemma3_config_of_transformers_4(first_device: gpucore.Device) -> None:
    """A config.json as transformers 4 saves Gemma 3's (LTX-2's: no layer_types, the window
    pattern, rope_theta and rope_local_base_freq, the global layers' rope_scaling) gives
    the layer types and rotations transformers 5 reads from it, each of which changes the
    states; a bidirectional Gemma is refused."""
    import transformers

    legacy = {k: v for k, v in GEMMA3_TINY.items()
              if k not in ("layer_types", "rope_parameters")}
    legacy.update(sliding_window_pattern=2, rope_theta=1000.0, rope_local_base_freq=100.0,
                  rope_scaling={"factor": 4.0, "rope_type": "linear"}, model_type="gemma3_text")
    read = transformers.Gemma3TextConfig(**legacy)
    assert read.layer_types == GEMMA3_TINY["layer_types"]  # the premise: the same model
    old, new = LLMTextModel(legacy, device=first_device), _gemma(first_device)
    assert (old.ropes, old.rope_of, old.window) == (new.ropes, new.rope_of, new.window)
    assert [(base, scaling.kind, scaling.factor) for base, scaling in new.ropes] == [
        (100.0, "default", 1.0), (1000.0, "linear", 4.0)] and new.rope_of == [0, 1, 0]
    with pytest.raises(ValueError, match="bidirectional"):
        LLMTextModel({**legacy, "use_bidirectional_attention": True}, device=first_device)
    # what the configs set visibly matters: another global scaling, local base or score scale
    ids, _ = _left_padded()
    states = new.hidden_states(ids, None, -1).numpy()
    for change in ({"rope_scaling": {"factor": 1.0, "rope_type": "linear"}},
                   {"rope_local_base_freq": 1000.0}, {"query_pre_attn_scalar": 8}):
        other = LLMTextModel({**legacy, **change}, device=first_device)
        other.load_state_dict(state_dict(tiny_gemma3_text()))
        moved = other.hidden_states(ids, None, -1).numpy()
        assert np.abs(moved - states).mean() > 0.05 * np.abs(states).mean(), change

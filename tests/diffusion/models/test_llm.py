"""The LLM text encoder against transformers' Qwen3Model on torch CPU (a tiny random model)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers", reason="transformers is a test-only reference")
import torch
from qwen3vl_tiny import tiny_qwen3vl_text
from sd_tiny import state_dict
from support import assert_close
from zimage_tiny import QWEN3_TINY, tiny_qwen3

import gpucore
from diffusion.models.llm import LLMTextModel
from gpustd import asarray

TOL = 1e-3  # f32 through every layer, typically ~1e-6


def _inputs() -> tuple[np.ndarray, np.ndarray]:
    """A padded batch of two prompts of 23 and 17 tokens (right padding)."""
    ids = np.random.default_rng(0).integers(0, QWEN3_TINY["vocab_size"], (2, 23))
    mask = np.ones((2, 23), np.int64)
    mask[1, 17:] = 0
    return ids, mask


def _reference(model: torch.nn.Module, ids: np.ndarray, mask: np.ndarray) -> tuple:
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                     output_hidden_states=True).hidden_states


@pytest.mark.parametrize("layer", [-2, -1, 0, 1])
def test_hidden_states_equal_transformers(device: gpucore.Device, layer: int) -> None:
    reference = tiny_qwen3()
    ours = LLMTextModel(reference.config.to_dict(), device=device)
    ours.load_state_dict(state_dict(reference))
    ids, mask = _inputs()
    expected = _reference(reference, ids, mask)[layer].numpy()
    got = ours.hidden_states(ids, mask, layer=layer).numpy()
    kept = mask.astype(bool)  # padded positions are the caller's to drop
    assert_close(got[kept], expected[kept], tol=TOL)


def test_several_layers_from_one_pass(device: gpucore.Device) -> None:
    """hidden_states_of: the layers asked for, in that order (one twice, the last normed),
    at every position, the padded ones too (FLUX.2 klein's transformer reads those)."""
    reference = tiny_qwen3()
    ours = LLMTextModel(reference.config.to_dict(), device=device)
    ours.load_state_dict(state_dict(reference))
    ids, mask = _inputs()
    expected = _reference(reference, ids, mask)
    layers = (2, 1, -1, 2)
    got = ours.hidden_states_of(ids, mask, layers)
    assert len(got) == len(layers)
    for layer, states in zip(layers, got, strict=True):
        assert_close(states.numpy(), expected[layer].numpy(), tol=TOL)


def test_prompt_and_padding(device: gpucore.Device) -> None:
    """The padding mask matters (the second prompt's states equal its own unpadded run), and
    so do the tokens (another token changes every later state, not earlier ones)."""
    reference = tiny_qwen3()
    ours = LLMTextModel(reference.config.to_dict(), device=device)
    ours.load_state_dict(state_dict(reference))
    ids, mask = _inputs()
    batch = ours.hidden_states(ids, mask, layer=-2).numpy()
    alone = ours.hidden_states(ids[1:, :17], None, layer=-2).numpy()
    assert_close(batch[1, :17], alone[0], tol=TOL)
    unmasked = ours.hidden_states(ids, None, layer=-2).numpy()
    assert np.abs(unmasked[1, :17] - batch[1, :17]).max() < 1e-5  # causal: later pads unseen
    changed = ids.copy()
    changed[0, 10] = (changed[0, 10] + 1) % QWEN3_TINY["vocab_size"]
    other = ours.hidden_states(changed, mask, layer=-2).numpy()
    assert np.abs(other[0, :10] - batch[0, :10]).max() < 1e-5
    assert np.abs(other[0, 10:] - batch[0, 10:]).mean() > 0.05 * np.abs(batch[0]).mean()


def test_hidden_states_f16_keep_large_activations(f16_device: gpucore.Device) -> None:
    """float16 weights with a residual stream past float16's 65504 (every MLP writing the
    same large features, each write below 65504, as an LLM's massive activations build up):
    the float32 stream keeps them, and the states match the float32 reference to float16
    error."""
    reference = tiny_qwen3(config={"num_hidden_layers": 4})
    first = reference.layers[0].mlp
    with torch.no_grad():
        for layer in reference.layers:
            for name in ("gate_proj", "up_proj", "down_proj"):
                getattr(layer.mlp, name).weight.copy_(getattr(first, name).weight)
        for layer in reference.layers:
            layer.mlp.down_proj.weight.mul_(14000.0)
    ours = LLMTextModel(reference.config.to_dict(), dtype=np.float16, device=f16_device)
    ours.load_state_dict(state_dict(reference))
    ids, mask = _inputs()
    expected = _reference(reference, ids, mask)[-2].numpy()
    kept = mask.astype(bool)
    assert np.abs(expected[kept]).max() > 65504  # the test's premise
    got = ours.hidden_states(ids, mask, layer=-2).numpy()
    assert_close(got[kept], expected[kept], tol=2e-2)


@pytest.mark.parametrize("kind", ["Qwen2", "Mistral", "Qwen2_5_VLText"])
def test_other_architectures_equal_transformers(first_device: gpucore.Device, kind: str) -> None:
    """Qwen2 (q/k/v biases, no q/k norms), Mistral (neither) and Qwen2.5-VL's language model
    (Qwen2's layers; its multimodal RoPE over text positions alone) from their configs."""
    import transformers
    from sd_tiny import randomized

    extra: dict = {"sliding_window": 64}
    if kind == "Qwen2_5_VLText":
        # its heads are hidden / heads wide whatever head_dim says (sections: half of 10)
        extra = {"head_dim": 10, "rope_parameters": {"rope_type": "default",
                                                     "rope_theta": 1e6,
                                                     "mrope_section": [1, 2, 2]}}
    config = getattr(transformers, f"{kind}Config")(**{**QWEN3_TINY, **extra})
    reference = randomized(getattr(transformers, f"{kind}Model")(config), 4)
    ours = LLMTextModel(reference.config.to_dict(), device=first_device)
    ours.load_state_dict(state_dict(reference))
    ids, mask = _inputs()
    kept = mask.astype(bool)
    expected = _reference(reference, ids, mask)[-2].numpy()
    assert_close(ours.hidden_states(ids, mask, layer=-2).numpy()[kept], expected[kept], tol=TOL)
    if kind == "Mistral":  # its window is used: a longer prompt is refused in one line
        with pytest.raises(ValueError, match="sliding attention window of 64"):
            ours.hidden_states(np.zeros((1, 65), np.int64))


def _ported_qwen3vl(device: gpucore.Device) -> tuple[torch.nn.Module, LLMTextModel]:
    reference = tiny_qwen3vl_text()
    ours = LLMTextModel(reference.config.to_dict(), device=device)
    ours.load_state_dict(state_dict(reference))
    return reference, ours


def test_qwen3_vl_text_equals_transformers(first_device: gpucore.Device) -> None:
    """Qwen3-VL's language model (Qwen3's layers; transformers turns text by its interleaved
    multimodal RoPE, one position on all three axes, ours by the plain rotary) on a batch
    left-padded as Qwen-Image 2.1 pads it: the last layer's output before the final norm
    (transformers' with the norm hooked out, as diffusers reads it) and after, visibly
    apart; the rotary tables themselves equal."""
    reference, ours = _ported_qwen3vl(first_device)
    ids, mask = _inputs()
    ids, mask = ids[:, ::-1].copy(), mask[:, ::-1].copy()  # the padding on the left
    kept = mask.astype(bool)
    hook = reference.norm.register_forward_hook(lambda module, args, output: args[0])
    try:
        raw = _reference(reference, ids, mask)[-1].numpy()
    finally:
        hook.remove()
    with torch.no_grad():
        normed = reference(input_ids=torch.from_numpy(ids),
                           attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
    got_raw = ours.hidden_states(ids, mask, final_norm=False).numpy()
    assert_close(got_raw[kept], raw[kept], tol=1e-5)  # measured 7e-7 of the largest
    assert_close(ours.hidden_states(ids, mask).numpy()[kept], normed[kept], tol=1e-5)
    assert np.abs(raw - normed)[kept].mean() > 0.2 * np.abs(normed[kept]).mean()  # ~0.45
    positions = torch.arange(ids.shape[1])[None, None].expand(3, 1, -1)
    cos, sin = reference.rotary_emb(torch.zeros(1), positions)
    table = ours.rotary(ids.shape[1])
    np.testing.assert_allclose(table[0].numpy()[:, 0], cos[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(table[1].numpy()[:, 0], sin[0].numpy(), atol=1e-6)


def test_qwen3_vl_multimodal_positions_interleaved(first_device: gpucore.Device) -> None:
    """Positions apart on the three axes (a picture's time, rows and columns): ours equal
    transformers' Qwen3VLTextModel given them; Qwen2.5-VL's contiguous sections in place of
    the interleaved ones visibly would not."""
    reference, ours = _ported_qwen3vl(first_device)
    rng = np.random.default_rng(6)
    embeds = rng.standard_normal((1, 19, QWEN3_TINY["hidden_size"])).astype(np.float32)
    positions = rng.integers(0, 40, (3, 19))
    with torch.no_grad():
        expected = reference(inputs_embeds=torch.from_numpy(embeds),
                             position_ids=torch.from_numpy(positions)[:, None]
                             ).last_hidden_state.numpy()
    got = ours.multimodal_hidden_states(asarray(embeds, device=first_device), positions)
    assert_close(got.numpy(), expected, tol=1e-5)
    ours.kind = ours.kind._replace(interleaved=False)
    contiguous = ours.multimodal_hidden_states(asarray(embeds, device=first_device), positions)
    assert np.abs(contiguous.numpy() - expected).mean() > 0.05 * np.abs(expected).mean()  # 0.19


def test_deepstack_rows_equal_full_tensors_and_transformers(first_device: gpucore.Device
                                                            ) -> None:
    """Deepstack features added to the first two layers' outputs at 7 positions apart (not
    contiguous, not a tile's multiple): given as their rows with `at` (one float16), ours equal
    the full zero-padded tensors' path exactly (x + 0.0 elsewhere changes no value; the pads
    add the same floats) and transformers' Qwen3VLTextModel given `visual_pos_masks` and
    `deepstack_visual_embeds`; the features visibly matter. A bad `at`: one line each."""
    reference, ours = _ported_qwen3vl(first_device)
    rng = np.random.default_rng(7)
    dim, length = QWEN3_TINY["hidden_size"], 19
    embeds = rng.standard_normal((1, length, dim)).astype(np.float32)
    positions = rng.integers(0, 40, (3, length))
    at = np.array([2, 3, 5, 9, 10, 11, 16])
    rows = [rng.standard_normal((len(at), dim)).astype(np.float32) for _ in range(2)]
    full = np.zeros((2, 1, length, dim), np.float32)
    full[:, 0, at] = rows
    mask = np.zeros((1, length), bool)
    mask[0, at] = True
    with torch.no_grad():
        expected = reference(inputs_embeds=torch.from_numpy(embeds),
                             position_ids=torch.from_numpy(positions)[:, None],
                             visual_pos_masks=torch.from_numpy(mask),
                             deepstack_visual_embeds=[torch.from_numpy(r) for r in rows]
                             ).last_hidden_state.numpy()
    x = asarray(embeds, device=first_device)
    got = ours.multimodal_hidden_states(x, positions, added=[
        asarray(rows[0], device=first_device), asarray(rows[1][None], device=first_device)],
        at=at.astype(np.int32)).numpy()
    whole = ours.multimodal_hidden_states(
        x, positions, added=[asarray(f, device=first_device) for f in full]).numpy()
    np.testing.assert_array_equal(got, whole)
    assert_close(got, expected, tol=1e-5)  # measured 9e-7
    plain = ours.multimodal_hidden_states(x, positions).numpy()
    assert np.abs(plain - expected).mean() > 0.1 * np.abs(expected).mean()  # 0.4
    for bad, match in (([2, 3, 19, 9, 10, 11, 16], "distinct integer positions in"),
                       ([2, 2, 5, 9, 10, 11, 16], "distinct integer positions in"),
                       ([2.0, 3, 5, 9, 10, 11, 16], "distinct integer positions in"),
                       ([at], "distinct integer positions in"),
                       ([2, 3, 5, 9, 10, 11], rf"tensors of shape \(1, 6, {dim}\)")):
        with pytest.raises(ValueError, match=match):
            ours.multimodal_hidden_states(x, positions, added=[
                asarray(rows[0], device=first_device)], at=bad)
    if first_device.has_f16:
        half = ours.multimodal_hidden_states(x, positions, at=at, added=[
            asarray(r.astype(np.float16), device=first_device) for r in rows]).numpy()
        assert_close(half, expected, tol=1e-3)  # the rows rounded to float16, measured 2.7e-4


@pytest.mark.nodevice
def test_bad_configs_get_one_line() -> None:
    with pytest.raises(ValueError, match="model_type 'gpt2'"):
        LLMTextModel({**QWEN3_TINY, "model_type": "gpt2"})
    with pytest.raises(ValueError, match="rope type 'dynamic'"):
        LLMTextModel({**QWEN3_TINY, "model_type": "qwen3",
                      "rope_parameters": {"rope_type": "dynamic", "rope_theta": 1e6}})
    with pytest.raises(ValueError, match="original_max_position_embeddings"):
        LLMTextModel({**QWEN3_TINY, "model_type": "qwen3",
                      "rope_parameters": {"rope_type": "yarn", "rope_theta": 1e6}})


def test_rotary_table_float32_over_512_tokens(first_device: gpucore.Device) -> None:
    """512 positions (Z-Image's prompt length) at Qwen3's rope_theta 1e6: ours equal
    transformers' float32 rotary table, and the table rounded to bfloat16 (what `Module.to(
    torch.bfloat16)` does to a reference's `inv_freq` buffer, and what an H200 benchmark's
    fp16 reference once compared against) visibly would not: it turns far positions by up to
    ~1.5 radians."""
    reference = tiny_qwen3(config={"num_hidden_layers": 1, "rope_theta": 1_000_000.0})
    ours = LLMTextModel(reference.config.to_dict(), device=first_device)
    ours.load_state_dict(state_dict(reference))
    ids = np.random.default_rng(2).integers(0, QWEN3_TINY["vocab_size"], (1, 512))
    expected = _reference(reference, ids, np.ones_like(ids))[1].numpy()
    assert_close(ours.hidden_states(ids, layer=1).numpy(), expected, tol=TOL)
    rotary = reference.rotary_emb
    rotary.inv_freq = rotary.inv_freq.to(torch.bfloat16).float()
    rounded = _reference(reference, ids, np.ones_like(ids))[1].numpy()
    assert np.abs(rounded - expected).max() > 4 * TOL * np.abs(expected).max()  # 8e-3

"""Z-Image's single-file transformers (the original layout, as ComfyUI loads them) read under
diffusers' names: every tensor equal to diffusers' own, the config from the shapes; a Q8_0
GGUF of one kept quantized (fused q/k/v rows cut from the blocks) and computing near the
float model; other files are not claimed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
from safetensors.torch import save_file
from sd_tiny import state_dict
from zimage_tiny import ZIMAGE_TINY, original_layout, tiny_zimage_transformer

import gpucore
from diffusion.loaders import WeightsError
from diffusion.loaders.component import load_component
from diffusion.loaders.z_image import load_zimage_file, zimage_family
from diffusion.models.z_image import ZImageTransformer2DModel
from gpustd import asarray
from gpustd.nn import deferred
from gpustd.quant import QuantizedTensor

# dims that whole Q8_0 blocks (32 values) divide, so the matrices are quantized
QUANTIZABLE = {**ZIMAGE_TINY, "dim": 64, "cap_feat_dim": 64, "in_channels": 16,
               "axes_dims": (4, 6, 6)}


@pytest.mark.nodevice
@pytest.mark.parametrize("prefix", ["model.diffusion_model.", ""])
def test_original_layout_reads_as_diffusers(tmp_path: Path, prefix: str) -> None:
    reference = tiny_zimage_transformer()
    file = tmp_path / "z_image.safetensors"
    save_file(original_layout(reference, prefix), str(file))
    assert zimage_family(file) == "z-image"
    weights = load_zimage_file(file, config={"axes_dims": ZIMAGE_TINY["axes_dims"]})
    expected = state_dict(reference)
    assert set(weights) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(weights[key], value, err_msg=key)
    for name in ("dim", "n_layers", "n_refiner_layers", "n_heads", "cap_feat_dim",
                 "in_channels"):
        assert weights.config[name] == ZIMAGE_TINY[name], name
    assert tuple(weights.config["axes_dims"]) == ZIMAGE_TINY["axes_dims"]


def test_gguf_kept_quantized(first_device: gpucore.Device, tmp_path: Path) -> None:
    pytest.importorskip("gguf", reason="GGUF files need the gguf package")
    import diffusers
    import torch
    from sd_tiny import randomized

    from diffusion.loaders.formats.gguf_write import write_gguf

    reference = randomized(diffusers.ZImageTransformer2DModel(**QUANTIZABLE), 5, scale=0.3)
    path = tmp_path / "z_image_turbo-Q8_0.gguf"
    write_gguf(path, ((k, v.numpy()) for k, v in original_layout(reference, "").items()),
               "q8_0", architecture="lumina2")
    assert zimage_family(path) == "z-image"
    weights = load_zimage_file(path, config={"axes_dims": QUANTIZABLE["axes_dims"]})
    with deferred():
        ours = ZImageTransformer2DModel(weights.config, device=first_device)
    load_component(ours, weights, slices=True)
    attention = ours.layers[0].attention
    for weight in (attention.to_q.weight, attention.to_v.weight,
                   ours.layers[1].feed_forward.w1.weight):
        assert isinstance(weight, QuantizedTensor) and weight.format == "q8_0"
    rng = np.random.default_rng(3)
    latents = rng.standard_normal((1, 16, 6, 4)).astype(np.float32)
    caption = rng.standard_normal((9, 64)).astype(np.float32)
    got = ours(asarray(latents, device=first_device), [0.4],
               [asarray(caption, device=first_device)]).numpy()
    with torch.no_grad():
        exact = reference([torch.from_numpy(latents[0, :, None])], torch.tensor([0.4]),
                          [torch.from_numpy(caption)]).sample[0][:, 0].numpy()
    error = np.linalg.norm(got[0] - exact) / np.linalg.norm(exact)
    assert 0 < error < 0.05, error  # quantized, and only as far off as 8 bits are


@pytest.mark.nodevice
def test_other_files_are_not_claimed(tmp_path: Path) -> None:
    import torch

    file = tmp_path / "other.safetensors"
    save_file({"layers.0.weight": torch.zeros(2)}, str(file))
    assert zimage_family(file) is None
    with pytest.raises(WeightsError, match="not a Z-Image transformer file"):
        load_zimage_file(file)
    (tmp_path / "broken.safetensors").write_bytes(b"nonsense")
    assert zimage_family(tmp_path / "broken.safetensors") is None


def test_qwen3_gguf_text_encoder(first_device: gpucore.Device, tmp_path: Path) -> None:
    """A llama.cpp GGUF of a Qwen3 (Q8_0; llama.cpp's names, ComfyUI-GGUF's kind of text
    encoder file): its matrices kept quantized, its states near transformers' float ones."""
    pytest.importorskip("gguf", reason="GGUF files need the gguf package")
    import torch
    from zimage_tiny import tiny_qwen3

    from diffusion.loaders.formats.gguf_write import write_gguf
    from diffusion.loaders.z_image import load_llm_file
    from diffusion.models.llm import LLMTextModel

    reference = tiny_qwen3(config=dict(hidden_size=64, intermediate_size=96, head_dim=16))
    names = {"embed_tokens": "token_embd", "norm": "output_norm"}
    layer = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
             "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    tensors = []
    for key, value in reference.state_dict().items():
        stem = key.removesuffix(".weight")
        if stem in names:
            name = names[stem]
        else:
            _, index, rest = stem.split(".", 2)
            name = f"blk.{index}.{layer[rest]}"
        tensors.append((f"{name}.weight", value.numpy()))
    path = tmp_path / "Qwen3-tiny-Q8_0.gguf"
    write_gguf(path, tensors, "q8_0", architecture="qwen3")
    weights = load_llm_file(path, config=reference.config.to_dict())
    with deferred():
        ours = LLMTextModel(weights.config, device=first_device)
    load_component(ours, weights)
    assert isinstance(ours.layers[0].self_attn.q_proj.weight, QuantizedTensor)
    ids = np.random.default_rng(0).integers(0, 300, (1, 13))
    with torch.no_grad():
        expected = reference(input_ids=torch.from_numpy(ids),
                             output_hidden_states=True).hidden_states[-2].numpy()
    got = ours.hidden_states(ids, layer=-2).numpy()
    error = np.linalg.norm(got - expected) / np.linalg.norm(expected)
    assert 0 < error < 0.05, error

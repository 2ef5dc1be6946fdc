"""city96's FLUX GGUF files (BFL names, bare; Q8_0 and Q4_K) and SD3.5 ones (Stability's
names; Q8_0) load with their matrices kept
quantized and compute what diffusers' FluxTransformer2DModel computes with the file's
tensors dequantized by gguf (put back under diffusers' names by inverting the tests' BFL
writer, not by our loader); and stay near the unquantized model's flow (the quantization's
error, not a wrong split or swap)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("gguf", reason="GGUF files need the gguf package")
import diffusers
import gguf
import torch
from flow_tiny import bfl_checkpoint, sai_checkpoint
from sd_tiny import randomized
from support import assert_close

import gpucore
import gpustd
from diffusion.loaders.errors import WeightsError
from diffusion.loaders.flow.file import flow_model_family
from diffusion.loaders.flow.gguf import load_flux_gguf, load_sd3_gguf
from diffusion.loaders.formats.gguf_write import write_gguf
from diffusion.pipelines.flow.flux import image_ids
from gpustd.quant import QuantizedTensor

# 128-wide heads (FLUX.1's rotary axes), rows of whole Q4_K blocks (256) in every matrix that
# FLUX.1 quantizes: the transformer's width, the text width, the pooled width
CONFIG = dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
              attention_head_dim=128, num_attention_heads=2, joint_attention_dim=256,
              pooled_projection_dim=256, axes_dims_rope=(16, 56, 56), guidance_embeds=True)


@pytest.fixture(scope="module")
def flux(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, diffusers.FluxTransformer2DModel]:
    root = tmp_path_factory.mktemp("flux-gguf")
    reference = randomized(diffusers.FluxTransformer2DModel(**CONFIG), 7)
    tensors = bfl_checkpoint(reference, "", bf16=False)
    for kind in ("q8_0", "q4_k"):  # Q8_0 for the family test
        write_gguf(root / f"flux1-dev-{kind}.gguf", ((k, v.numpy()) for k, v in tensors.items()),
                   kind, architecture="flux")
    return root, reference


def _inputs() -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(3)
    return (rng.standard_normal((1, 20, 16)).astype(np.float32),  # 4 x 5 patches
            rng.standard_normal((1, 7, 256)).astype(np.float32),
            rng.standard_normal((1, 256)).astype(np.float32), np.array([0.7], np.float32),
            np.array([3.5], np.float32))


def _torch_flow(model: diffusers.FluxTransformer2DModel) -> np.ndarray:
    latents, text, pooled, t, guidance = (torch.from_numpy(a) for a in _inputs())
    with torch.no_grad():
        return model(latents, text, pooled, t, torch.from_numpy(image_ids(4, 5)),
                     torch.zeros(7, 3), guidance).sample.numpy()


def _dequantized(path: Path) -> dict[str, torch.Tensor]:
    """The file's tensors as gguf dequantizes them, in their original shapes."""
    reader = gguf.GGUFReader(path)
    state = {}
    for tensor in reader.tensors:
        values = np.array(gguf.quants.dequantize(tensor.data, tensor.tensor_type), np.float32)
        shape = reader.get_field("comfy.gguf.orig_shape." + tensor.name)
        shape = (shape.contents() if shape is not None
                 else [int(d) for d in reversed(tensor.shape.tolist())])
        state[tensor.name] = torch.from_numpy(values.reshape(shape))
    return state


def _inverted(model: torch.nn.Module, writer: Any, state: dict[str, torch.Tensor]) -> Any:
    """`model` holding `state` (a file's tensors under its original names): `writer` (the
    tests' diffusers -> original names) run on a model whose parameters count 0, 1, 2, ...
    says where each value goes (buffers, SD3's fixed position table, are -1 meanwhile)."""
    start = 0
    with torch.no_grad():
        buffers = {name: b.clone() for name, b in model.named_buffers()}
        for buffer in model.buffers():
            buffer.fill_(-1)
        for parameter in model.parameters():
            parameter.copy_(torch.arange(start, start + parameter.numel()).reshape(
                parameter.shape))
            start += parameter.numel()
        where = writer(model)
        flat = torch.zeros(start)
        for name, index in where.items():
            index, values = index.reshape(-1).long(), state[name].reshape(-1)
            flat[index[index >= 0]] = values[index >= 0]
        for name, buffer in model.named_buffers():
            buffer.copy_(buffers[name])
        start = 0
        for parameter in model.parameters():
            parameter.copy_(flat[start:start + parameter.numel()].reshape(parameter.shape))
            start += parameter.numel()
    return model


# relative RMS distance from the unquantized flow (measured 0.012 and 0.15 on these random
# weights: 8-bit and 4-bit steps; a wrong split or swap is off by ~1). Q8_0 FLUX runs in
# test_flow_single_file's GGUF pipeline, Q8_0 here in the SD3 test (CI time).
@pytest.mark.parametrize(("kind", "near"), [("q4_k", 0.25)])
def test_flux_gguf_matches_its_dequantized_tensors(first_device: gpucore.Device,
                                                   flux: tuple[Path, object], kind: str,
                                                   near: float) -> None:
    root, reference = flux
    path = root / f"flux1-dev-{kind}.gguf"
    ours = load_flux_gguf(path, device=first_device)
    block = ours.transformer_blocks[0]
    for weight in (block.attn.to_q.weight, block.attn.add_v_proj.weight,
                   ours.single_transformer_blocks[0].proj_mlp.weight, ours.norm_out.linear.weight):
        assert isinstance(weight, QuantizedTensor) and weight.format == kind
    latents, text, pooled, t, guidance = _inputs()
    got = ours(gpustd.asarray(latents, device=first_device),
               gpustd.asarray(text, device=first_device),
               gpustd.asarray(pooled, device=first_device), t, image_ids(4, 5),
               np.zeros((7, 3), np.float32), guidance).numpy()
    dequantized = _inverted(diffusers.FluxTransformer2DModel(**CONFIG),
                            lambda m: bfl_checkpoint(m, "", bf16=False), _dequantized(path))
    assert_close(got, _torch_flow(dequantized), tol=1e-3)
    exact = _torch_flow(reference)
    error = np.linalg.norm(got - exact) / np.linalg.norm(exact)
    assert 0 < error < near, error  # quantized, and only as far off as the format is coarse


def test_flux_gguf_family_and_errors(flux: tuple[Path, object], tmp_path: Path) -> None:
    root, _ = flux
    assert flow_model_family(root / "flux1-dev-q8_0.gguf") == "flux-dev"
    other = tmp_path / "unet.gguf"
    write_gguf(other, [("input_blocks.0.0.weight", np.ones((4, 64), np.float32))], "q8_0",
               architecture="sd1")
    assert flow_model_family(other) is None
    with pytest.raises(WeightsError, match="not a FLUX GGUF"):
        load_flux_gguf(other)


def test_sd3_gguf_matches_its_dequantized_tensors(first_device: gpucore.Device,
                                                  tmp_path: Path) -> None:
    """SD3.5 Medium's form (QK-norm, a dual-attention block), Q8_0: the patch embedding's
    kernel quantized as its matrix, the last block's text adaLN halves swapped."""
    config = dict(sample_size=8, patch_size=2, in_channels=16, num_layers=2,
                  attention_head_dim=64, num_attention_heads=1, joint_attention_dim=64,
                  caption_projection_dim=64, pooled_projection_dim=64, out_channels=16,
                  pos_embed_max_size=12, qk_norm="rms_norm", dual_attention_layers=(0,))
    reference = randomized(diffusers.SD3Transformer2DModel(**config), 9)
    path = tmp_path / "sd3.5_medium-Q8_0.gguf"
    write_gguf(path, ((k, v.numpy()) for k, v in sai_checkpoint(reference).items()), "q8_0",
               architecture="sd3")
    assert flow_model_family(path) == "sd3"
    ours = load_sd3_gguf(path, device=first_device)
    for weight in (ours.pos_embed.proj.weight, ours.transformer_blocks[1].norm1_context.linear
                   .weight, ours.transformer_blocks[0].attn2.to_k.weight):
        assert isinstance(weight, QuantizedTensor)
    rng = np.random.default_rng(4)
    latents = rng.standard_normal((1, 16, 10, 6)).astype(np.float32)
    text = rng.standard_normal((1, 7, 64)).astype(np.float32)
    pooled = rng.standard_normal((1, 64)).astype(np.float32)
    t = np.array([600.0], np.float32)
    got = ours(*(gpustd.asarray(a, device=first_device) for a in (latents, text, pooled)),
               t).numpy()
    dequantized = _inverted(diffusers.SD3Transformer2DModel(**config), sai_checkpoint,
                            _dequantized(path))

    def flow(model: Any) -> np.ndarray:
        with torch.no_grad():
            return model(*(torch.from_numpy(a) for a in (latents, text, pooled, t))).sample.numpy()

    # the worst element's |error| / (rms + |expected|) measured on lavapipe: 1.8e-3
    assert_close(got, flow(dequantized), tol=5e-3)
    exact = flow(reference)
    assert 0 < np.linalg.norm(got - exact) / np.linalg.norm(exact) < 0.03

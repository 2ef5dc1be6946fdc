"""LoRA for FLUX and SD3: diffusers/PEFT and kohya layouts. The PEFT and kohya FLUX files give
diffusers' picture after its `load_lora_weights` (with `set_adapters` weights); kohya's fused
layers (BFL's qkv and linear1, SD3's qkv) and swapped final adaLN are checked against the
update made in the original checkpoint's space and read back through the single-file loader
(diffusers' kohya conversion hard-codes FLUX.1's 3072/12288 sizes for linear1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("peft", reason="diffusers' LoRA loading needs peft")
import torch
from flow_tiny import bfl_checkpoint, sai_checkpoint
from safetensors.torch import save_file
from support import assert_close

import gpucore
from diffusion import load_pipeline
from diffusion.loaders.flow.flux_file import load_flux_file
from diffusion.loaders.flow.sd3_file import load_sd3_file

RANK = 2


def _pair(out: int, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(RANK, width, generator=g) * 0.3, torch.randn(out, RANK, generator=g) * 0.3)


def _kohya(layers: dict[str, tuple[int, int]], alpha: float = 1.0) -> dict[str, torch.Tensor]:
    state = {}
    for k, (name, (out, width)) in enumerate(layers.items()):
        down, up = _pair(out, width, k)
        state.update({f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up,
                      f"{name}.alpha": torch.tensor(alpha)})
    return state


@pytest.mark.parametrize("layout", ["peft", "kohya"])
def test_flux_lora_picture_matches_diffusers(first_device: gpucore.Device,
                                             tiny_flux_dev: tuple[Path, Any], tmp_path: Path,
                                             layout: str) -> None:
    root, reference = tiny_flux_dev
    shapes = {k.removesuffix(".weight"): tuple(v.shape)
              for k, v in reference.transformer.state_dict().items()}
    if layout == "peft":
        state = {}
        for k, path in enumerate(("transformer_blocks.0.attn.to_q", "x_embedder",
                                  "single_transformer_blocks.0.proj_mlp")):
            down, up = _pair(*shapes[path], seed=k)
            state[f"transformer.{path}.lora_A.weight"] = down
            state[f"transformer.{path}.lora_B.weight"] = up
    else:  # BFL names: a fused qkv and a plain layer (diffusers 0.42 drops a kohya LoRA of
        # the final adaLN without a word: that one is checked in the checkpoint's space below)
        dim = shapes["x_embedder"][0]
        state = _kohya({"lora_unet_double_blocks_0_img_attn_qkv": (3 * dim, dim),
                        "lora_unet_double_blocks_0_txt_mlp_0": shapes[
                            "transformer_blocks.0.ff_context.net.0.proj"]}, alpha=2.0)
    save_file(state, str(tmp_path / f"{layout}.safetensors"))
    settings = dict(height=16, width=24, num_inference_steps=2, guidance_scale=3.5,
                    max_sequence_length=16)
    reference.load_lora_weights(str(tmp_path / f"{layout}.safetensors"), adapter_name=layout)
    try:
        reference.set_adapters([layout], adapter_weights=[0.5])
        expected = reference("a red circle", generator=torch.Generator().manual_seed(7),
                             output_type="np", **settings).images[0]
    finally:
        reference.unload_lora_weights()
    ours = load_pipeline(root / "flux", device=first_device)
    ours.lora_dir, ours.max_sequence_length = tmp_path, 16
    request = dict(sampler="diffusers", rng="torch", seed=7, steps=2, width=24, height=16,
                   cfg_scale=1.0)
    got = ours.generate(f"<lora:{layout}:0.5>a red circle", **request)  # the tag leaves no space
    assert got.settings["lora_hashes"].startswith(f"{layout}: ")
    assert np.abs(got.images[0].astype(int) - np.round(expected * 255)).max() <= 1
    plain = ours.generate("a red circle", **request).images[0]  # the LoRA comes off again
    assert np.abs(plain.astype(int) - got.images[0]).max() > 4


def _patched(model: Any, tag: str) -> None:
    from diffusion.text.prompts import extract_extra_networks

    model.loras.activate(extract_extra_networks(tag)[1], model.lora_dir)


def _apply(checkpoint: dict[str, torch.Tensor], state: dict[str, torch.Tensor],
           names: dict[str, str], weight: float) -> None:
    """W + weight * alpha / rank * up @ down in the checkpoint's own (fused) names."""
    for lora, key in names.items():
        scale = float(state[f"{lora}.alpha"]) / RANK
        checkpoint[key] = checkpoint[key] + weight * scale * (
            state[f"{lora}.lora_up.weight"] @ state[f"{lora}.lora_down.weight"])


def test_kohya_fused_layers_flux(first_device: gpucore.Device, tiny_flux_dev: tuple[Path, Any],
                                 tmp_path: Path) -> None:
    root, reference = tiny_flux_dev
    bfl = bfl_checkpoint(reference.transformer, "", bf16=False)
    names = {"lora_unet_double_blocks_0_img_attn_qkv": "double_blocks.0.img_attn.qkv.weight",
             "lora_unet_single_blocks_0_linear1": "single_blocks.0.linear1.weight",
             "lora_unet_final_layer_adaLN_modulation_1":
             "final_layer.adaLN_modulation.1.weight"}
    state = _kohya({lora: tuple(bfl[key].shape) for lora, key in names.items()}, alpha=1.5)
    save_file(state, str(tmp_path / "fused.safetensors"))
    _apply(bfl, state, names, 0.7)
    save_file({k: v.contiguous() for k, v in bfl.items()}, str(tmp_path / "bfl.safetensors"))
    expected = load_flux_file(tmp_path / "bfl.safetensors")
    ours = load_pipeline(root / "flux", device=first_device)
    ours.lora_dir = tmp_path
    _patched(ours, "<lora:fused:0.7>")
    parameters = dict(ours.transformer.named_parameters())
    patched = [k for k in parameters if k.startswith(("transformer_blocks.0.attn.to_",
                                                      "single_transformer_blocks.0.attn.to_",
                                                      "single_transformer_blocks.0.proj_mlp",
                                                      "norm_out.linear"))]
    # q, k, v twice, proj_mlp, norm_out (and to_out, to_add_out left as they were)
    assert len(patched) == 20
    for key in patched:
        assert_close(parameters[key].numpy(), expected[key], tol=1e-6)


def test_kohya_fused_layers_sd3(first_device: gpucore.Device, tiny_sd3: tuple[Path, Any],
                                tmp_path: Path) -> None:
    root, reference = tiny_sd3
    sai = sai_checkpoint(reference.transformer)
    last = reference.transformer.config.num_layers - 1
    names = {"lora_unet_joint_blocks_0_x_block_attn_qkv": "joint_blocks.0.x_block.attn.qkv.weight",
             "lora_unet_joint_blocks_0_x_block_mlp_fc1": "joint_blocks.0.x_block.mlp.fc1.weight",
             f"lora_unet_joint_blocks_{last}_context_block_adaLN_modulation_1":
             f"joint_blocks.{last}.context_block.adaLN_modulation.1.weight",
             "lora_unet_final_layer_adaLN_modulation_1":
             "final_layer.adaLN_modulation.1.weight"}
    state = _kohya({lora: tuple(sai[key].shape) for lora, key in names.items()}, alpha=2.0)
    save_file(state, str(tmp_path / "sd3-lora.safetensors"))
    _apply(sai, state, names, 1.0)
    save_file({k: v.contiguous() for k, v in sai.items()}, str(tmp_path / "sai.safetensors"))
    expected = load_sd3_file(tmp_path / "sai.safetensors")
    ours = load_pipeline(root / "sd3", device=first_device)
    ours.lora_dir = tmp_path
    _patched(ours, "<lora:sd3-lora:1>")
    for key, value in ours.transformer.named_parameters():
        assert_close(value.numpy(), expected[key], tol=1e-6)

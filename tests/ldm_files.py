"""Shared by the loader tests: tiny random diffusers/transformers models, their LDM
(original single-file) key layout written by an independent inverse of diffusers' conversion,
and sparse full-size layouts. Nothing is downloaded."""

from __future__ import annotations

import json
import math
import os
import re
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")
import sd_tiny  # noqa: E402

from diffusion.loaders import (  # noqa: E402
    ComponentWeights,
    WeightsError,
    load_pipeline_weights,
)

# The shapes of diffusers' dummy components, shared with the model tests.
UNET_TINY = {**sd_tiny.UNET_TINY, "sample_size": 32}
VAE_TINY = sd_tiny.VAE_TINY
CLIP_TINY = {k: sd_tiny.CLIP_TINY[k] for k in (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
    "intermediate_size", "max_position_embeddings")}
MODEL_INDEX = {"_class_name": "StableDiffusionPipeline",
               "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
               "text_encoder": ["transformers", "CLIPTextModel"],
               "scheduler": ["diffusers", "PNDMScheduler"]}


def randomized(model, seed):
    """Every parameter random (init leaves norms at 1/0, which would hide swapped names)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=gen))
    return model.eval()


def state(model):
    return {k: v.numpy() for k, v in model.state_dict().items()}


def tiny_models() -> SimpleNamespace:
    """Every tiny component the loader tests need, with all parameters random."""
    clip = transformers.CLIPTextConfig
    return SimpleNamespace(
        unet=randomized(diffusers.UNet2DConditionModel(**UNET_TINY), 1),
        unet9=randomized(diffusers.UNet2DConditionModel(**{**UNET_TINY, "in_channels": 9}), 2),
        unet_sd2=randomized(
            diffusers.UNet2DConditionModel(**UNET_TINY, use_linear_projection=True), 3),
        vae=randomized(diffusers.AutoencoderKL(**VAE_TINY), 4),
        text=randomized(transformers.CLIPTextModel(clip(**CLIP_TINY)), 5),
        # OpenCLIP-shaped: 23 layers kept of 24, like SD2
        text_sd2=randomized(transformers.CLIPTextModel(clip(**{**CLIP_TINY, "num_hidden_layers": 23,
                                                               "hidden_act": "gelu"})), 6))


def write_folder(root: Path, tiny, *, unet=None, **unet_save) -> Path:
    (unet or tiny.unet).save_pretrained(root / "unet", **unet_save)
    tiny.vae.save_pretrained(root / "vae")
    tiny.text.save_pretrained(root / "text_encoder")
    diffusers.PNDMScheduler(prediction_type="v_prediction").save_pretrained(root / "scheduler")
    (root / "tokenizer").mkdir()
    (root / "model_index.json").write_text(json.dumps(MODEL_INDEX))
    return root


def assert_component(weights: ComponentWeights, expected: dict[str, np.ndarray]):
    assert set(weights) == set(expected)
    for key, want in expected.items():
        got = weights[key]
        assert got.dtype == want.dtype and got.shape == weights.shape(key), key
        np.testing.assert_array_equal(got, want, err_msg=key)


# -- the inverse mapping (diffusers -> LDM), an independent test helper checked against diffusers'
#    own LDM -> diffusers converters below. Works on real and on meta tensors.

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0",
           "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1",
           "conv_shortcut": "skip_connection"}
_UNET_FIXED = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
               "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}


def ldm_unet(sd, layers=2):
    per, out = layers + 1, {}
    up_attn = {int(m[1]) for k in sd if (m := re.match(r"up_blocks\.(\d+)\.attentions", k))}
    for name, value in sd.items():
        module, _, param = name.rpartition(".")
        if module in _UNET_FIXED:
            key = f"{_UNET_FIXED[module]}.{param}"
        elif m := re.fullmatch(r"(down|up)_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", name):
            side = "input" if m[1] == "down" else "output"
            i = int(m[2]) * per + int(m[4]) + (m[1] == "down")
            key = (f"{side}_blocks.{i}.1.{m[5]}" if m[3] == "attentions"
                   else f"{side}_blocks.{i}.0.{_RESNET[m[5].split('.')[0]]}.{param}")
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv", module):
            key = f"input_blocks.{1 + int(m[1]) * per + layers}.0.op.{param}"
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv", module):
            sub = 2 if int(m[1]) in up_attn else 1
            key = f"output_blocks.{int(m[1]) * per + layers}.{sub}.conv.{param}"
        elif m := re.fullmatch(r"mid_block\.resnets\.(\d)\.(\w+)", module):
            key = f"middle_block.{2 * int(m[1])}.{_RESNET[m[2]]}.{param}"
        else:
            key = name.replace("mid_block.attentions.0.", "middle_block.1.")
            assert key != name, name
        out["model.diffusion_model." + key] = value
    return out


_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def ldm_vae(sd):
    levels = 1 + max(int(m[1]) for k in sd if (m := re.match(r"decoder\.up_blocks\.(\d+)", k)))
    out = {}
    for name, value in sd.items():
        key = name.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.(resnets|downsamplers)\.(\d)\.(.+)",
                             key):
            key = (f"encoder.down.{m[1]}.block.{m[3]}.{m[4]}" if m[2] == "resnets"
                   else f"encoder.down.{m[1]}.downsample.{m[4]}")
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.(resnets|upsamplers)\.(\d)\.(.+)", key):
            level = levels - 1 - int(m[1])
            key = (f"decoder.up.{level}.block.{m[3]}.{m[4]}" if m[2] == "resnets"
                   else f"decoder.up.{level}.upsample.{m[4]}")
        elif m := re.fullmatch(r"(\w+)\.mid_block\.resnets\.(\d)\.(.+)", key):
            key = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"
        elif m := re.fullmatch(r"(\w+)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)", key):
            key = f"{m[1]}.mid.attn_1.{_VAE_ATTN[m[2]]}.{m[3]}"
            if value.ndim == 2:  # LDM stores these as 1x1 convolutions
                value = value.reshape(*value.shape, 1, 1)
        out["first_stage_model." + key] = value
    return out


def ldm_clip(sd):
    out = {f"cond_stage_model.transformer.text_model.{k}": v for k, v in sd.items()}
    out["cond_stage_model.transformer.text_model.embeddings.position_ids"] = \
        torch.arange(77, device=sd["final_layer_norm.weight"].device)[None]
    return out


_OPEN_CLIP = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc",
              "mlp.fc2": "mlp.c_proj", "self_attn.out_proj": "attn.out_proj"}


def ldm_open_clip(sd, seed=7):
    """OpenCLIP layout of a 23-layer CLIP, plus the 24th layer and text_projection SD2 files hold
    (random: the loader must drop them)."""
    pre, out = "cond_stage_model.model.", {}
    n = 1 + max(int(m[1]) for k in sd if (m := re.match(r"encoder\.layers\.(\d+)", k)))
    layers = {f"encoder.layers.{n}.{k[len('encoder.layers.0.'):]}":
              torch.randn(v.shape, generator=torch.Generator().manual_seed(seed)).to(v.device)
              for k, v in sd.items() if k.startswith("encoder.layers.0.")}
    merged = {**sd, **layers}
    for name, value in merged.items():
        if m := re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", name):
            head = f"{pre}transformer.resblocks.{m[1]}."
            if m[2].endswith(("q_proj", "k_proj", "v_proj")):
                if m[2].endswith("q_proj"):
                    fused = [merged[name.replace("q_proj", f"{p}_proj")] for p in "qkv"]
                    out[f"{head}attn.in_proj_{m[3]}"] = torch.cat(fused)
                continue
            out[f"{head}{_OPEN_CLIP[m[2]]}.{m[3]}"] = value
        else:
            key = {"embeddings.token_embedding.weight": "token_embedding.weight",
                   "embeddings.position_embedding.weight": "positional_embedding"}.get(
                       name, name.replace("final_layer_norm", "ln_final"))
            out[pre + key] = value
    norm = sd["final_layer_norm.weight"]
    out[pre + "text_projection"] = torch.randn(len(norm), len(norm)).to(norm.device)
    return out


def write_ldm(path: Path, unet, vae, text, *, open_clip=False, metadata=None) -> dict:
    """Save an LDM single-file checkpoint of the given diffusers/transformers models."""
    text_sd = text.state_dict()
    ckpt = {**ldm_unet(unet.state_dict()), **ldm_vae(vae.state_dict()),
            **(ldm_open_clip(text_sd) if open_clip else ldm_clip(text_sd))}
    safetensors_torch.save_file({k: v.contiguous() for k, v in ckpt.items()}, path, metadata)
    return ckpt


# -- the test helper agrees with diffusers' own LDM -> diffusers conversion -----------------------



_ITEM = {"F16": 2, "F32": 4, "I64": 8}


def write_sparse(path: Path, tensors: dict) -> None:
    """A safetensors file declaring these tensors (names, shapes) whose data is a sparse hole."""
    header, offset = {}, 0
    for key, value in tensors.items():
        dtype = "I64" if value.dtype == torch.int64 else "F16"
        size = math.prod(value.shape) * _ITEM[dtype]
        header[key] = {"dtype": dtype, "shape": list(value.shape),
                       "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(raw)) + raw)
        file.truncate(8 + len(raw) + offset)


def _tags(ckpt):
    """LDM key -> an object array holding the key, shaped like the tensor's rank, so diffusers'
    converters (which slice 1x1 conv weights) report where each diffusers key came from."""
    out = {}
    for key, value in ckpt.items():
        out[key] = np.empty((1,) * value.ndim, dtype=object)
        out[key][...] = key
    return out


SD_FULL = {
    "sd1": dict(unet={"cross_attention_dim": 768},
                text=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                          num_attention_heads=12, projection_dim=768),
                yaml_unet={"num_heads": 8, "context_dim": 768}),
    "sd2": dict(unet={"cross_attention_dim": 1024, "attention_head_dim": [5, 10, 20, 20],
                      "use_linear_projection": True, "sample_size": 96},
                text=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                          num_attention_heads=16, hidden_act="gelu", projection_dim=512),
                yaml_unet={"num_head_channels": 64, "use_linear_in_transformer": True,
                           "context_dim": 1024}),
}




def _raises(path, match, **kwargs):
    with pytest.raises(WeightsError, match=match) as info:
        load_pipeline_weights(path, **kwargs)
    return str(info.value)




def _small_file(path: Path) -> bytes:
    safetensors_torch.save_file({"a": torch.randn(3, 5), "b": torch.arange(7)}, path)
    return path.read_bytes()



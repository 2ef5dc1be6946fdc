"""diffusion.loaders against diffusers/transformers (torch CPU): tiny random models saved
in-process, full-size SD1.5/SD2.1 key layouts as sparse files, and every error path. Nothing is
downloaded."""

from __future__ import annotations

import json
import math
import os
import re
import struct
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

os.environ["HF_HUB_OFFLINE"] = "1"
torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")
import sd_tiny  # noqa: E402
from diffusers.loaders import single_file_utils as sfu  # noqa: E402

from diffusion.loaders import (  # noqa: E402
    ComponentWeights,
    SafetensorsFile,
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


@pytest.fixture(scope="module")
def tiny():
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

def test_inverse_helper_matches_diffusers_conversion(tiny):
    """diffusers' converters turn the helper's LDM dicts back into the exact state dicts, so the
    single-file tests below compare against a layout diffusers itself accepts."""
    unet_sd, vae_sd = tiny.unet.state_dict(), tiny.vae.state_dict()
    back = sfu.convert_ldm_unet_checkpoint(ldm_unet(unet_sd), {"layers_per_block": 2})
    assert back.keys() == unet_sd.keys() and all(torch.equal(back[k], unet_sd[k]) for k in back)
    back = sfu.convert_ldm_vae_checkpoint(ldm_vae(vae_sd), VAE_TINY)
    assert back.keys() == vae_sd.keys() and all(torch.equal(back[k], vae_sd[k]) for k in back)
    text_sd = tiny.text_sd2.state_dict()
    back = sfu.convert_open_clip_checkpoint(None, ldm_open_clip(text_sd))
    back = {k.removeprefix("text_model."): v for k, v in back.items()}
    assert back.keys() == text_sd.keys() and all(torch.equal(back[k], text_sd[k]) for k in back)


# -- diffusers folders ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def folder(tmp_path_factory, tiny):
    return write_folder(tmp_path_factory.mktemp("sd") / "pipe", tiny)


def test_folder_loads_every_tensor_exactly(folder, tiny):
    w = load_pipeline_weights(folder)
    assert_component(w.unet, state(tiny.unet))
    assert_component(w.vae, state(tiny.vae))
    assert_component(w.text_encoder, state(tiny.text))
    assert w.unet.config == json.loads((folder / "unet" / "config.json").read_text())
    assert w.text_encoder.config["num_hidden_layers"] == 5
    assert w.scheduler_config["_class_name"] == "PNDMScheduler"
    assert w.info.prediction_type == "v_prediction" and w.info.source == "diffusers"
    assert (w.info.family, w.info.inpainting) == ("sd1", False)
    assert w.tokenizer_dir == folder / "tokenizer"
    assert load_pipeline_weights(folder / "model_index.json").unet.keys() == w.unet.keys()
    w = load_pipeline_weights(folder, prediction_type="epsilon")
    assert w.info.prediction_type == w.scheduler_config["prediction_type"] == "epsilon"


def test_folder_fp16_variant_sharded_and_dtype(tmp_path, tiny):
    half = diffusers.UNet2DConditionModel(**UNET_TINY).half()
    half.load_state_dict(tiny.unet.state_dict())
    root = write_folder(tmp_path / "fp16only", tiny, unet=half, variant="fp16")
    w = load_pipeline_weights(root)  # only a .fp16 variant on disk: it is used
    assert_component(w.unet, state(half))
    assert_component(load_pipeline_weights(root, dtype="float32").unet,
                     {k: v.astype(np.float32) for k, v in state(half).items()})
    tiny.unet.save_pretrained(root / "unet")  # now both: default f32, variant= picks fp16
    assert_component(load_pipeline_weights(root).unet, state(tiny.unet))
    assert_component(load_pipeline_weights(root, variant="fp16").unet, state(half))
    assert_component(load_pipeline_weights(root, dtype=np.float16).unet,
                     {k: v.astype(np.float16) for k, v in state(tiny.unet).items()})
    sharded = write_folder(tmp_path / "sharded", tiny, max_shard_size="1MB")
    assert len(list((sharded / "unet").glob("*-of-*.safetensors"))) > 1
    assert_component(load_pipeline_weights(sharded).unet, state(tiny.unet))


def test_folder_bf16_and_prefixed_text_encoder(tmp_path, tiny):
    root = write_folder(tmp_path / "p", tiny)
    sd = {f"text_model.{k}": v.bfloat16() for k, v in tiny.text.state_dict().items()}
    sd["text_model.embeddings.position_ids"] = torch.arange(77)[None]  # older transformers' files
    safetensors_torch.save_file(sd, root / "text_encoder" / "model.safetensors")
    as_f32 = {k: v.bfloat16().float().numpy() for k, v in tiny.text.state_dict().items()}
    assert_component(load_pipeline_weights(root).text_encoder, as_f32)
    assert_component(load_pipeline_weights(root, dtype="float16").text_encoder,
                     {k: v.astype(np.float16) for k, v in as_f32.items()})


# -- single-file LDM checkpoints ------------------------------------------------------------------

def test_single_file_sd1_converts_every_tensor(tmp_path, tiny):
    ckpt = write_ldm(tmp_path / "m.safetensors", tiny.unet, tiny.vae, tiny.text)
    old_layout = {k.replace(".text_model.", "."): v.contiguous() for k, v in ckpt.items()}
    safetensors_torch.save_file(old_layout, tmp_path / "old.safetensors")  # pre-4.x CLIP names
    assert_component(load_pipeline_weights(tmp_path / "old.safetensors").text_encoder,
                     state(tiny.text))
    w = load_pipeline_weights(tmp_path / "m.safetensors")
    assert_component(w.unet, state(tiny.unet))
    assert_component(w.vae, state(tiny.vae))
    assert_component(w.text_encoder, state(tiny.text))
    assert w.info.family == "sd1" and w.info.prediction_type == "epsilon"
    assert w.info.source == "single_file" and not w.info.inpainting and w.tokenizer_dir is None
    assert w.scheduler_config["_class_name"] == "PNDMScheduler"
    json.dumps([w.unet.config, w.vae.config, w.text_encoder.config, w.scheduler_config])
    for key in ("in_channels", "out_channels", "block_out_channels", "layers_per_block",
                "down_block_types", "up_block_types", "cross_attention_dim"):
        assert list(np.ravel(w.unet.config[key])) == list(np.ravel(tiny.unet.config[key])), key
    assert w.unet.config["use_linear_projection"] is False
    for key in ("block_out_channels", "latent_channels", "layers_per_block", "in_channels"):
        assert list(np.ravel(w.vae.config[key])) == list(np.ravel(tiny.vae.config[key])), key
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "vocab_size"):
        assert w.text_encoder.config[key] == tiny.text.config.to_dict()[key], key
    # the inferred configs build diffusers/transformers models with exactly these tensors
    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel(**w.unet.config)
        vae = diffusers.AutoencoderKL(**w.vae.config)
        text = transformers.CLIPTextModel(transformers.CLIPTextConfig(**w.text_encoder.config))
    for weights, model in ((w.unet, unet), (w.vae, vae), (w.text_encoder, text)):
        assert {k: weights.shape(k) for k in weights} == {k: tuple(v.shape) for k, v in
                                                          model.state_dict().items()}


def test_single_file_sd2_inpainting_and_prediction_type(tmp_path, tiny):
    path = tmp_path / "sd2.safetensors"
    write_ldm(path, tiny.unet_sd2, tiny.vae, tiny.text_sd2, open_clip=True)
    w = load_pipeline_weights(path)
    assert_component(w.unet, state(tiny.unet_sd2))
    assert_component(w.text_encoder, state(tiny.text_sd2))  # q/k/v split, last layer dropped
    assert (w.info.family, w.info.prediction_type) == ("sd2", "v_prediction")
    assert w.unet.config["use_linear_projection"] and w.unet.config["upcast_attention"]
    assert w.text_encoder.config["hidden_act"] == "gelu"
    assert w.text_encoder.config["num_hidden_layers"] == 23
    assert w.scheduler_config == {**w.scheduler_config, "_class_name": "DDIMScheduler",
                                  "prediction_type": "v_prediction"}
    assert load_pipeline_weights(path, prediction_type="epsilon").info.prediction_type == "epsilon"
    path.with_suffix(".yaml").write_text("model:\n  params:\n    linear_start: 0.00085\n")
    assert load_pipeline_weights(path).info.prediction_type == "epsilon"  # LDM default: eps
    sd1 = tmp_path / "sd1.safetensors"
    write_ldm(sd1, tiny.unet9, tiny.vae, tiny.text, metadata={"modelspec.prediction_type": "v"})
    w = load_pipeline_weights(sd1)
    assert w.info.inpainting and w.unet.config["in_channels"] == 9
    assert w.info.prediction_type == "v_prediction"
    assert_component(w.unet, state(tiny.unet9))
    sd1.with_suffix(".yaml").write_text('model:\n  params:\n    parameterization: "eps"\n')
    assert load_pipeline_weights(sd1).info.prediction_type == "epsilon"
    sd1.with_suffix(".yaml").write_text("model:\n  params:\n    parameterization: v\n")
    assert load_pipeline_weights(sd1).info.prediction_type == "v_prediction"


# -- full-size key layouts (sparse files: real shapes, no data) -----------------------------------

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


@pytest.mark.parametrize("family", ["sd1", "sd2"])
def test_full_size_layout_maps_like_diffusers(tmp_path, family):
    spec = SD_FULL[family]
    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel(**spec["unet"])
        vae = diffusers.AutoencoderKL(block_out_channels=[128, 256, 512, 512], layers_per_block=2,
                                      down_block_types=["DownEncoderBlock2D"] * 4,
                                      up_block_types=["UpDecoderBlock2D"] * 4)
        text = transformers.CLIPTextModel(transformers.CLIPTextConfig(**spec["text"]))
        unet_ldm, vae_ldm = ldm_unet(unet.state_dict()), ldm_vae(vae.state_dict())
        text_ldm = (ldm_open_clip(text.state_dict()) if family == "sd2"
                    else ldm_clip(text.state_dict()))
    path = tmp_path / "full.safetensors"
    write_sparse(path, {**unet_ldm, **vae_ldm, **text_ldm})
    w = load_pipeline_weights(path)
    assert (w.info.family, w.info.prediction_type) == (family, "v_prediction" if family == "sd2"
                                                       else "epsilon")
    for weights, model in ((w.unet, unet), (w.vae, vae), (w.text_encoder, text)):
        assert {k: weights.shape(k) for k in weights} == {k: tuple(v.shape) for k, v in
                                                          model.state_dict().items()}
    # every tensor comes from the same LDM key as in diffusers' converters
    reference = sfu.convert_ldm_unet_checkpoint(dict(zip(unet_ldm, unet_ldm)),
                                                {"layers_per_block": 2})
    assert {name: w.unet.source(name)[1] for name in w.unet} == reference
    reference = sfu.convert_ldm_vae_checkpoint(_tags(vae_ldm), vae.config)
    assert {n: w.vae.source(n)[1] for n in w.vae} == {k: v.flat[0] for k, v in reference.items()}
    if family == "sd1":
        reference = sfu.convert_ldm_clip_checkpoint(dict(zip(text_ldm, text_ldm)))
        reference.pop("text_model.embeddings.position_ids")  # a buffer, not a weight
    else:
        reference = {k: str(tuple(v.shape))
                     for k, v in sfu.convert_open_clip_checkpoint(None, text_ldm).items()}
        ours = {f"text_model.{k}": str(w.text_encoder.shape(k)) for k in w.text_encoder}
        assert ours == reference
        reference = {k: w.text_encoder.source(k.removeprefix("text_model."))[1] for k in reference}
    assert {f"text_model.{k}": w.text_encoder.source(k)[1] for k in w.text_encoder} == reference
    # configs as diffusers derives them from the original LDM yaml (v1-inference / v2-inference-v)
    shapes = {k: SimpleNamespace(shape=tuple(v.shape)) for k, v in {**unet_ldm, **vae_ldm}.items()}
    original = {"model": {"params": {
        "unet_config": {"params": {"in_channels": 4, "out_channels": 4, "model_channels": 320,
                                   "attention_resolutions": [4, 2, 1], "num_res_blocks": 2,
                                   "channel_mult": [1, 2, 4, 4], "transformer_depth": 1,
                                   **spec["yaml_unet"]}},
        "first_stage_config": {"params": {"ddconfig": {
            "z_channels": 4, "in_channels": 3, "out_ch": 3, "ch": 128, "ch_mult": [1, 2, 4, 4],
            "num_res_blocks": 2}}}}}}
    for ours, theirs in (
            (w.unet.config, sfu.create_unet_diffusers_config_from_ldm(original, shapes)),
            (w.vae.config, sfu.create_vae_diffusers_config_from_ldm(original, shapes))):
        for key, value in theirs.items():
            if value is not None:
                assert np.ravel(ours[key]).tolist() == np.ravel(value).tolist(), key
    assert w.unet["conv_in.weight"].shape == (320, 4, 3, 3)  # data reads work (a hole reads as 0)


# -- laziness -------------------------------------------------------------------------------------

def test_tensors_are_read_on_access_one_at_a_time(tmp_path, tiny):
    path = tmp_path / "m.safetensors"
    ckpt = write_ldm(path, tiny.unet, tiny.vae, tiny.text)
    unet_bytes = sum(v.numel() * 4 for k, v in ckpt.items() if k.startswith("model."))
    tracemalloc.start()
    try:
        w = load_pipeline_weights(path)
        load_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        largest = max(w.unet[k].nbytes for k in w.unet)  # each array dropped after use
        read_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # an eager loader would peak at >= the whole UNet; this one at about a header / one tensor
    assert load_peak < unet_bytes / 4, (load_peak, unet_bytes)
    assert read_peak < unet_bytes / 4, (read_peak, largest, unet_bytes)
    # nothing was read or cached at load time: rewriting the file changes what indexing returns
    safetensors_torch.save_file({k: (v * 2 if v.is_floating_point() else v).contiguous()
                                 for k, v in ckpt.items()}, path)
    np.testing.assert_array_equal(w.unet["conv_in.weight"], 2 * state(tiny.unet)["conv_in.weight"])


# -- errors ---------------------------------------------------------------------------------------

def _raises(path, match, **kwargs):
    with pytest.raises(WeightsError, match=match) as info:
        load_pipeline_weights(path, **kwargs)
    return str(info.value)


def test_missing_paths_and_pickle_are_refused(tmp_path, tiny):
    assert str(tmp_path / "nope") in _raises(tmp_path / "nope", "no such file")
    torch.save({"state_dict": {}}, tmp_path / "model.ckpt")
    assert "pickle" in _raises(tmp_path / "model.ckpt", "refusing")
    (tmp_path / "notes.txt").write_text("x")
    _raises(tmp_path / "notes.txt", "unsupported file type")
    _raises(tmp_path, "model_index.json is missing")
    root = write_folder(tmp_path / "p", tiny)
    text_dir = root / "text_encoder"
    (text_dir / "model.safetensors").rename(text_dir / "pytorch_model.bin")
    assert "pytorch_model.bin" in _raises(root, "pickle")
    (text_dir / "pytorch_model.bin").unlink()
    _raises(root, r"no weights: expected model.safetensors")


def test_folder_errors_name_the_file(tmp_path, tiny):
    root = write_folder(tmp_path / "p", tiny)
    sd = state(tiny.vae)
    sd.pop("decoder.conv_out.bias")
    safetensors_torch.save_file({k: torch.from_numpy(v) for k, v in sd.items()},
                                root / "vae" / "diffusion_pytorch_model.safetensors")
    msg = _raises(root, "decoder.conv_out.bias")
    assert "vae/diffusion_pytorch_model.safetensors" in msg
    (root / "model_index.json").write_text(json.dumps({**MODEL_INDEX, "unet": [None, None]}))
    _raises(root, "no 'unet' component")
    (root / "model_index.json").write_text("{not json")
    _raises(root, "model_index.json: cannot read it as JSON")
    root = write_folder(tmp_path / "q", tiny)
    (root / "scheduler" / "scheduler_config.json").unlink()
    _raises(root, "scheduler_config.json: required file is missing")
    config = json.loads((root / "unet" / "config.json").read_text())
    config["class_embed_type"] = "timestep"
    (root / "unet" / "config.json").write_text(json.dumps(config))
    _raises(root, "unet/config.json: .*class_embed_type")
    sharded = write_folder(tmp_path / "s", tiny, max_shard_size="1MB")
    index = sharded / "unet" / "diffusion_pytorch_model.safetensors.index.json"
    data = json.loads(index.read_text())
    shards = sorted(set(data["weight_map"].values()))
    wrong = shards[1] if data["weight_map"]["conv_in.weight"] == shards[0] else shards[0]
    data["weight_map"]["conv_in.weight"] = wrong  # an index that disagrees with its shards
    index.write_text(json.dumps(data))
    _raises(sharded, "conv_in.weight")
    (sharded / "unet" / wrong).unlink()
    _raises(sharded, f"{wrong}: file not found")


def test_single_file_errors_name_the_key(tmp_path, tiny):
    ckpt = {**ldm_unet(tiny.unet.state_dict()), **ldm_vae(tiny.vae.state_dict()),
            **ldm_clip(tiny.text.state_dict())}
    cases = {
        "model.diffusion_model.input_blocks.0.0.weight": "UNet tensor 'model.diffusion_model.input",
        "first_stage_model.decoder.conv_in.weight": "VAE tensor 'first_stage_model.decoder",
        "model.diffusion_model.output_blocks.2.0.skip_connection.bias":
            "up_blocks.0.resnets.2.conv_shortcut.bias",
    }
    for dropped, match in cases.items():
        path = tmp_path / "m.safetensors"
        safetensors_torch.save_file({k: v for k, v in ckpt.items() if k != dropped}, path)
        assert str(path) in _raises(path, re.escape(match))
    safetensors_torch.save_file({**ckpt, "conditioner.embedders.0.x": torch.ones(1)}, path)
    _raises(path, "SDXL")
    safetensors_torch.save_file(tiny.unet.state_dict(), path)
    _raises(path, "pass the pipeline folder")
    with pytest.raises(ValueError, match="dtype"):
        load_pipeline_weights(path, dtype="int8")
    with pytest.raises(ValueError, match="prediction_type"):
        load_pipeline_weights(path, prediction_type="v")
    with pytest.raises(ValueError, match="variant"):
        load_pipeline_weights(path, variant="fp16")


def _small_file(path: Path) -> bytes:
    safetensors_torch.save_file({"a": torch.randn(3, 5), "b": torch.arange(7)}, path)
    return path.read_bytes()


def test_corrupt_safetensors_raise_weights_error(tmp_path):
    path = tmp_path / "x.safetensors"
    data = _small_file(path)
    (length,) = struct.unpack("<Q", data[:8])
    header, tensors = json.loads(data[8:8 + length]), data[8 + length:]

    def rebuilt(**changes):
        raw = json.dumps({**header, **changes}).encode()
        return struct.pack("<Q", len(raw)) + raw + tensors

    a = header["a"]
    cases = {
        "shorter than the 8-byte": data[:5],
        "header length .* runs past the end": struct.pack("<Q", len(data)) + data[8:],
        "header is not JSON": data[:8] + b"{" * length + tensors,
        "zip/pickle": b"PK\x03\x04\0\0\0\x7f" + data[8:],
        "tensor '[ab]' has data offsets .* past the end": data[:-4],
        "entry for tensor 'a' is malformed": rebuilt(a={**a, "dtype": "F99"}),
        r"'a' of shape \[3, 6\] F32 needs 72 bytes, its offsets span 60":
            rebuilt(a={**a, "shape": [3, 6]}),
        "not a JSON object": struct.pack("<Q", 2) + b"[]",
    }
    for match, content in cases.items():
        path.write_bytes(content)
        with pytest.raises(WeightsError, match=match) as info:
            SafetensorsFile(path)
        assert str(path) in str(info.value)
    path.write_bytes(rebuilt(a={**a, "dtype": "F8_E4M3", "shape": [60]}))
    with pytest.raises(WeightsError, match="'a' is stored as F8_E4M3"):
        SafetensorsFile(path).read("a")
    np.testing.assert_array_equal(SafetensorsFile(path).read("b"), np.arange(7))


@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_damaged_files_never_crash(tmp_path_factory, data):
    """Truncated or byte-flipped files load or raise WeightsError, nothing else."""
    path = tmp_path_factory.mktemp("fuzz") / "x.safetensors"
    content = bytearray(_small_file(path))
    if data.draw(st.booleans()):
        content = content[:data.draw(st.integers(0, len(content) - 1))]
        path.write_bytes(content)
        with pytest.raises(WeightsError):
            SafetensorsFile(path)
        return
    for _ in range(data.draw(st.integers(1, 4))):
        content[data.draw(st.integers(0, 80))] = data.draw(st.integers(0, 255))
    path.write_bytes(content)
    try:
        file = SafetensorsFile(path)
        for key in file.keys():
            file.read(key)
    except WeightsError:
        pass

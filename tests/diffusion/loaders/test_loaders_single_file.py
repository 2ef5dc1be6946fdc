"""diffusion.loaders on single-file LDM checkpoints: SD1/SD2/inpainting conversion, the
full-size key layouts against diffusers, and corrupt or damaged files."""

from __future__ import annotations

import json
import re
import struct
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("diffusers", reason="test-only reference (extra: reference)")
from diffusers.loaders import single_file_utils as sfu
from ldm_files import (
    SD_FULL,
    _raises,
    _small_file,
    _tags,
    assert_component,
    diffusers,
    ldm_clip,
    ldm_open_clip,
    ldm_unet,
    ldm_vae,
    safetensors_torch,
    state,
    torch,
    transformers,
    write_ldm,
    write_sparse,
)

from diffusion.loaders import (
    SafetensorsFile,
    WeightsError,
    load_pipeline_weights,
)

pytestmark = pytest.mark.nodevice  # host logic: `pytest -m nodevice`


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
    safetensors_torch.save_file({k.removeprefix("first_stage_model."): v.contiguous()  # *.vae
                                 for k, v in ldm_vae(tiny.vae.state_dict()).items()}, path)
    _raises(path, "UNet tensor .* is missing \\(this is a VAE file: give it as the VAE, --vae")
    safetensors_torch.save_file({"lora_unet_mid_block_attentions_0_proj_in.lora_down.weight":
                                 torch.ones(4, 8)}, path)
    _raises(path, "is missing \\(this is a LoRA: put it in the LoRA folder")
    safetensors_torch.save_file({"conv_first.weight": torch.ones(4, 3, 3, 3),
                                 "body.0.rdb1.conv1.weight": torch.ones(4, 4, 3, 3)}, path)
    _raises(path, "is missing \\(this looks like an upscaler")
    with pytest.raises(ValueError, match="dtype"):
        load_pipeline_weights(path, dtype="int8")
    with pytest.raises(ValueError, match="prediction_type"):
        load_pipeline_weights(path, prediction_type="v")
    with pytest.raises(ValueError, match="variant"):
        load_pipeline_weights(path, variant="fp16")


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
    assert SafetensorsFile(path).read("a").dtype == np.float32  # float8 is widened (test_float8)
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


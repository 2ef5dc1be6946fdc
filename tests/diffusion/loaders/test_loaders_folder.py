"""diffusion.loaders on diffusers folders: every tensor exact, variants, shards, bf16,
laziness, and the folder error paths."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="test-only reference (extra: reference)")
from diffusers.loaders import single_file_utils as sfu
from ldm_files import (
    MODEL_INDEX,
    UNET_TINY,
    VAE_TINY,
    _raises,
    assert_component,
    diffusers,
    ldm_open_clip,
    ldm_unet,
    ldm_vae,
    safetensors_torch,
    state,
    torch,
    write_folder,
    write_ldm,
)

from diffusion.loaders import (
    load_pipeline_weights,
)

pytestmark = pytest.mark.nodevice  # host logic: `pytest -m nodevice`


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


def test_missing_paths_and_bad_files_are_refused(tmp_path, tiny):
    assert str(tmp_path / "nope") in _raises(tmp_path / "nope", "no such file")
    torch.save({"state_dict": {}}, tmp_path / "model.ckpt")
    _raises(tmp_path / "model.ckpt", "not a complete Stable Diffusion checkpoint")
    (tmp_path / "notes.txt").write_text("x")
    _raises(tmp_path / "notes.txt", "unsupported file type")
    _raises(tmp_path, "model_index.json is missing")
    root = write_folder(tmp_path / "p", tiny)
    text_dir = root / "text_encoder"
    (text_dir / "model.safetensors").rename(text_dir / "pytorch_model.bin")
    # a .bin that is not torch.save's (here: safetensors bytes under that name)
    assert "pytorch_model.bin" in _raises(root, "not a valid PyTorch file")
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



"""Chroma's transformer as the single file people download (original names, bare or under
ComfyUI's prefix) with its T5 and VAE from `--text-encoder` files: the same tensors as the
diffusers folder of the same parts, and with the folder's tokenizer swapped for the bundled
one, the folder pipeline's picture. The tiny parts have the shapes the configs are read from:
128-wide heads with (16, 56, 56) rotary axes, T5's 128-distance buckets and real vocabulary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import diffusers
import torch
import transformers
from diffusers.loaders.single_file_utils import convert_chroma_transformer_checkpoint_to_diffusers
from flow_tiny import (
    CHROMA_TINY,
    FLUX_DEV_SCHEDULER,
    T5_TINY,
    chroma_checkpoint,
    tiny_t5_tokenizer,
)
from ldm_files import ldm_vae
from safetensors.torch import save_file
from sd_tiny import VAE_TINY, randomized

import gpucore
from diffusion.loaders.errors import WeightsError
from diffusion.loaders.flow.chroma import chroma_family, load_chroma
from diffusion.loaders.flow.file import flow_model_family
from diffusion.pipelines.flow.chroma import ChromaPipeline
from diffusion.text.t5_tokenizer import T5Tokenizer

CHROMA_FILE = {**CHROMA_TINY, "num_layers": 1, "num_single_layers": 1,
               "attention_head_dim": 128, "num_attention_heads": 1,
               "axes_dims_rope": (16, 56, 56)}
T5_FILE = {**T5_TINY, "vocab_size": 32128, "relative_attention_max_distance": 128}


@pytest.fixture(scope="module")
def chroma(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the files' folder, the diffusers pipeline saved to its `folder/`)."""
    root = tmp_path_factory.mktemp("chroma-file")
    transformer = randomized(diffusers.ChromaTransformer2DModel(**CHROMA_FILE), 7)
    vae = randomized(diffusers.AutoencoderKL(
        **VAE_TINY, use_quant_conv=False, use_post_quant_conv=False, scaling_factor=0.3611,
        shift_factor=0.1159), 2)
    t5 = randomized(transformers.T5EncoderModel(transformers.T5Config(**T5_FILE)), 6)
    tiny_t5_tokenizer(root / "t5-tokenizer")  # a stand-in: the test swaps the bundled one in
    pipe = diffusers.ChromaPipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**FLUX_DEV_SCHEDULER), vae=vae,
        text_encoder=t5, transformer=transformer, tokenizer=transformers.T5TokenizerFast(
            tokenizer_file=str(root / "t5-tokenizer" / "tokenizer.json")))
    pipe.save_pretrained(root / "folder")
    save_file(chroma_checkpoint(transformer, ""), str(root / "chroma-unlocked-v50.safetensors"))
    save_file(chroma_checkpoint(transformer, "model.diffusion_model."),
              str(root / "chroma-comfy.safetensors"))
    save_file({k.removeprefix("first_stage_model."): v
               for k, v in ldm_vae(vae.state_dict()).items()}, str(root / "ae.safetensors"))
    save_file({k: v.contiguous() for k, v in t5.state_dict().items()
               if k != "encoder.embed_tokens.weight"}, str(root / "t5xxl_fp16.safetensors"))
    return root, pipe


@pytest.mark.nodevice
def test_the_test_checkpoint_is_the_original_layout(chroma: tuple[Path, Any]) -> None:
    """diffusers' own conversion turns the test's original-layout tensors back (the single
    blocks' fused linear1 aside: diffusers splits it at FLUX's full widths, so it gets a
    stand-in of that length and only its names are compared)."""
    transformer = chroma[1].transformer
    original = chroma_checkpoint(transformer, "model.diffusion_model.")
    fused = {k for k in original if ".linear1." in k}
    original.update({k: torch.zeros(3 * 3072 + 4 * 3072) for k in fused})
    converted = convert_chroma_transformer_checkpoint_to_diffusers(original)
    expected = transformer.state_dict()
    assert sorted(converted) == sorted(expected)
    for key, value in expected.items():
        if not key.startswith("single_transformer_blocks.") or ".norm_" in key \
                or ".proj_out." in key:
            np.testing.assert_array_equal(converted[key].numpy(), value.numpy(), err_msg=key)


@pytest.mark.nodevice
@pytest.mark.parametrize("name", ["chroma-unlocked-v50", "chroma-comfy"])
def test_chroma_file_loads_the_folder_tensors(chroma: tuple[Path, Any], name: str) -> None:
    root = chroma[0]
    file = root / f"{name}.safetensors"
    assert chroma_family(file) == chroma_family(root / "folder") == "chroma"
    assert flow_model_family(file) is None  # FLUX's blocks, but not a FLUX file
    got, modules = load_chroma(file, [root / "t5xxl_fp16.safetensors", root / "ae.safetensors"])
    expected, _ = load_chroma(root / "folder")
    assert modules == ["t5xxl_fp16", "ae"]
    for part in ("transformer", "vae", "text_encoder"):
        ours, theirs = getattr(got, part), getattr(expected, part)
        assert sorted(ours) == sorted(theirs), part
        for key in theirs:
            np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
    config = got.transformer.config
    assert {k: config[k] for k in CHROMA_FILE} == {
        k: tuple(v) if isinstance(v, list) else v
        for k, v in expected.transformer.config.items() if k in CHROMA_FILE}
    assert got.scheduler_config == {"_class_name": "FlowMatchEulerDiscreteScheduler",
                                    **FLUX_DEV_SCHEDULER}


def test_chroma_file_draws_the_folder_picture(first_device: gpucore.Device,
                                              chroma: tuple[Path, Any]) -> None:
    root = chroma[0]
    folder = ChromaPipeline.from_pretrained(root / "folder", device=first_device)
    folder.tokenizer = T5Tokenizer()
    file = ChromaPipeline.from_pretrained(
        root / "chroma-unlocked-v50.safetensors", device=first_device,
        text_encoder_files=[root / "t5xxl_fp16.safetensors", root / "ae.safetensors"])

    def draw(pipe: ChromaPipeline) -> np.ndarray:
        return pipe("a red circle on a blue background", negative_prompt="a dog", height=32,
                    width=32, num_inference_steps=2, guidance_scale=3.0, seed=1,
                    max_sequence_length=16, output_type="latent")

    np.testing.assert_array_equal(draw(file), draw(folder))


@pytest.mark.nodevice
def test_chroma_file_names_what_is_missing(chroma: tuple[Path, Any]) -> None:
    file = chroma[0] / "chroma-unlocked-v50.safetensors"
    with pytest.raises(WeightsError, match=(
            r"has no t5xxl_fp16.safetensors \(the T5-XXL text encoder\) and no ae.safetensors "
            r"\(FLUX's VAE\); give --text-encoder t5xxl_fp16.safetensors and --text-encoder "
            r"ae.safetensors")):
        load_chroma(file)
    with pytest.raises(WeightsError, match=r"no T5-XXL text encoder .* or VAE"):
        load_chroma(file, [chroma[0] / "chroma-comfy.safetensors"])


def test_chroma_gguf(first_device: gpucore.Device, chroma: tuple[Path, Any]) -> None:
    """A Q8_0 GGUF of the original file (as silveroxides' Chroma1-HD GGUFs are made): the
    transformer stays quantized, the latents stay near the float file's, and the registry
    loads it with its T5 and VAE files, the T5 a GGUF too."""
    from safetensors.numpy import load_file
    from t5_files import write_t5_gguf

    from diffusion.loaders.formats.gguf_write import write_gguf
    from diffusion.pipelines.load import load_pipeline
    from gpustd.nn.quantized import quantized_weights
    from gpustd.quant import QuantizedTensor

    root = chroma[0]
    modules = [root / "t5xxl_fp16.safetensors", root / "ae.safetensors"]
    gguf = root / "Chroma1-HD-Q8_0.gguf"
    write_gguf(gguf, load_file(str(root / "chroma-unlocked-v50.safetensors")).items(), "q8_0",
               architecture="flux")
    assert chroma_family(gguf) == "chroma" and flow_model_family(gguf) is None
    model = load_pipeline(gguf, text_encoders=modules, device=first_device)
    assert model.family == "chroma" and model.name == "Chroma1-HD-Q8_0"
    ours = model.pipe
    assert isinstance(ours.transformer.transformer_blocks[0].attn.to_k.weight, QuantizedTensor)
    float_file = ChromaPipeline.from_pretrained(root / "chroma-unlocked-v50.safetensors",
                                                text_encoder_files=modules, device=first_device)
    settings = dict(negative_prompt="a dog", height=32, width=32, num_inference_steps=2,
                    guidance_scale=3.0, seed=1, max_sequence_length=16, output_type="latent")
    got = ours("a red circle on a blue background", **settings)
    expected = float_file("a red circle on a blue background", **settings)
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 0.05
    assert not np.array_equal(got, expected)
    # city96's kind of T5 GGUF in the T5 file's place: its matrices quantized too
    t5 = root / "t5-v1_1-xxl-encoder-Q8_0.gguf"
    write_t5_gguf(chroma[1].text_encoder, t5, "q8_0")
    both = ChromaPipeline.from_pretrained(gguf, text_encoder_files=[t5, modules[1]],
                                          device=first_device)
    assert quantized_weights(both.text_encoder) and both.modules == [
        "t5-v1_1-xxl-encoder-Q8_0", "ae"]

"""Qwen-Image through the command line like any model: the family detected from a diffusers
folder, QwenImagePipeline's defaults (50 steps, true CFG 4), diffusers' picture with
`--sampler diffusers --rng torch` (with and without true CFG), the prompt visibly mattering,
a WebUI sampler, what it refuses in one line (init images, --base with a folder, a folder
missing a part), and its file forms as ComfyUI users have them (the split diffusion model file
and GGUFs of it with a Qwen-Image folder as --base, its Qwen2.5-VL text encoder file)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_error, cli_ok, png_pixels
from PIL import Image
from qwenimage_tiny import QWENIMAGE_TINY
from safetensors.torch import save_file
from sd_tiny import state_dict

import diffusion.cli.main as cli
import gpucore
from diffusion.infotext import read_infotext
from diffusion.loaders import WeightsError
from diffusion.loaders.qwen_image import load_qwenimage_file, qwenimage_family
from diffusion.pipelines.contract import SamplingDefaults
from diffusion.pipelines.flow.qwen_image import pack, true_cfg, unpack
from diffusion.pipelines.load import load_pipeline, model_defaults
from diffusion.pipelines.request import GenerationRequest

SIZE = ("--width", "40", "--height", "24")
# long enough to outweigh the template's system text, which the tiny tokenizer splits finely
RED = "a red circle on a blue square, " * 6
FILES = ("txt2img", "--prompt", RED, *SIZE, "--steps", "2", "--sampler", "diffusers",
         "--rng", "torch", "--seed", "7", "--dtype", "float32", "--cfg-scale", "1")
HORSE = "an astronaut riding a horse at night, " * 6


def _diffusers(reference: Any, prompt: str, **settings: Any) -> np.ndarray:
    return reference(prompt, height=24, width=40, num_inference_steps=2,
                     generator=torch.Generator().manual_seed(7), output_type="np",
                     **settings).images[0]


def test_qwenimage_from_the_cli(first_device: gpucore.Device,
                                tiny_qwenimage: tuple[Path, Any], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    """QwenImagePipeline's defaults and its picture; the prompt visibly changes it; CFG 1 is
    diffusers' call without a negative prompt."""
    folder, reference = tiny_qwenimage
    assert model_defaults(folder)[0] == SamplingDefaults(steps=50, sampler="Euler",
                                                         cfg_scale=4.0)
    common = ("txt2img", "--model", str(folder), *SIZE, "--steps", "2", "--sampler",
              "diffusers", "--rng", "torch", "--seed", "7", "--dtype", "float32")
    out, err = cli_ok(capsys, *common, "--prompt", RED, "--negative-prompt",
                      "a photo of a cat", "--out", str(tmp_path / "a.png"))
    assert "qwen-image model (qwen-image): --cfg-scale 4" in err
    ours = png_pixels(out)
    expected = _diffusers(reference, RED, negative_prompt="a photo of a cat",
                          true_cfg_scale=4.0)
    assert np.abs(ours - expected).mean() < 0.01
    out, _ = cli_ok(capsys, *common, "--prompt", HORSE,
                    "--negative-prompt", "a photo of a cat", "--out", str(tmp_path / "b.png"))
    other = png_pixels(out)
    assert np.abs(other - ours).mean() > 0.02  # the prompt matters (the test's premise)
    assert np.abs(other - _diffusers(reference, HORSE,
                                     negative_prompt="a photo of a cat",
                                     true_cfg_scale=4.0)).mean() < 0.01
    out, _ = cli_ok(capsys, *common, "--prompt", RED, "--cfg-scale", "1",
                    "--out", str(tmp_path / "c.png"))
    plain = png_pixels(out)
    assert np.abs(plain - _diffusers(reference, RED)).mean() < 0.01
    assert np.abs(plain - ours).mean() > 0.01  # the negative pass matters too


def test_qwenimage_webui_sampler_and_refusals(first_device: gpucore.Device,
                                              tiny_qwenimage: tuple[Path, Any],
                                              tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    folder, _ = tiny_qwenimage
    out, _ = cli_ok(capsys, "txt2img", "--model", str(folder), "--prompt", "a red circle",
                    *SIZE, "--steps", "2", "--seed", "7", "--dtype", "float32",
                    "--cfg-scale", "2", "--out", str(tmp_path / "e.png"))
    text = read_infotext(out)
    assert text is not None
    assert "Steps: 2, Sampler: Euler, Schedule type: Simple, CFG scale: 2, Seed: 7" in text
    assert png_pixels(out).std() > 0.01
    model = load_pipeline(folder, device=first_device)
    init = np.random.default_rng(5).integers(0, 256, (24, 40, 3), np.uint8)
    # img2img with a WebUI sampler from the last quarter of the schedule: the init image
    # matters (the tiny random VAE's encoder tells these two apart only faintly)
    pictures = [model.generate(GenerationRequest(
        prompt="a", width=40, height=24, steps=4, seed=7, sampler="Euler", strength=0.25,
        init_image=image)).images[0].astype(np.float32) for image in (init, 255 - init)]
    assert np.abs(pictures[0] - pictures[1]).mean() > 0.5
    # inpainting with a WebUI sampler: outside the mask the init image laid back (the mask
    # as given: no blur), inside repainted
    mask = np.zeros((24, 40), np.uint8)
    mask[8:16, 8:32] = 255
    painted = model.generate(GenerationRequest(
        prompt="a", width=40, height=24, steps=4, seed=7, sampler="Euler", strength=0.9,
        init_image=init, mask=mask)).images[0].astype(np.int64)
    np.testing.assert_array_equal(painted[mask == 0], init[mask == 0])
    assert np.abs(painted[mask > 0] - init[mask > 0]).mean() > 10


def test_qwenimage_img2img(first_device: gpucore.Device, tiny_qwenimage: tuple[Path, Any],
                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """From an init image: diffusers' QwenImageImg2ImgPipeline's picture through the CLI;
    the init image visibly matters."""
    import diffusers

    folder, reference = tiny_qwenimage
    rng = np.random.default_rng(3)
    init = rng.integers(0, 256, (24, 40, 3), np.uint8)
    Image.fromarray(init).save(tmp_path / "init.png")
    common = ("img2img", "--model", str(folder), "--prompt", RED, "--negative-prompt",
              "a photo of a cat", *SIZE, "--steps", "4", "--sampler", "diffusers", "--rng",
              "torch", "--seed", "7", "--dtype", "float32", "--strength", "0.5")
    out, _ = cli_ok(capsys, *common, "--init-image", str(tmp_path / "init.png"),
                    "--out", str(tmp_path / "i.png"))
    ours = png_pixels(out)
    img2img = diffusers.QwenImageImg2ImgPipeline(**reference.components)
    expected = img2img(RED, negative_prompt="a photo of a cat", true_cfg_scale=4.0,
                       image=Image.fromarray(init), strength=0.5, height=24, width=40,
                       num_inference_steps=4, generator=torch.Generator().manual_seed(7),
                       output_type="np").images[0]
    assert np.abs(ours - expected).mean() < 0.01
    Image.fromarray(255 - init).save(tmp_path / "other.png")
    out, _ = cli_ok(capsys, *common, "--init-image", str(tmp_path / "other.png"),
                    "--out", str(tmp_path / "o.png"))
    assert np.abs(png_pixels(out) - ours).mean() > 0.02


def test_qwenimage_inpaint_equals_diffusers(first_device: gpucore.Device,
                                            tiny_qwenimage: tuple[Path, Any]) -> None:
    """With a mask and the "diffusers" sampler: QwenImageInpaintPipeline's picture (the kept
    part put back at each step's noise level; its draws in diffusers' order)."""
    import diffusers

    from diffusion.pipelines.flow.qwen_image import QwenImagePipeline

    folder, reference = tiny_qwenimage
    init = Image.fromarray(np.random.default_rng(3).integers(0, 256, (24, 40, 3), np.uint8))
    mask = np.zeros((24, 40), np.uint8)
    mask[8:16, 8:32] = 255
    settings: dict[str, Any] = dict(height=24, width=40, num_inference_steps=4, strength=0.6,
                                    true_cfg_scale=4.0, negative_prompt="a photo of a cat")
    expected = diffusers.QwenImageInpaintPipeline(**reference.components)(
        RED, image=init, mask_image=Image.fromarray(mask),
        generator=torch.Generator().manual_seed(7), output_type="np", **settings).images[0]
    ours = QwenImagePipeline.from_pretrained(folder, device=first_device)
    got = ours(RED, image=init, mask_image=Image.fromarray(mask), seed=7, **settings)[0]
    assert np.abs(got - expected).max() < 1e-3
    plain = ours(RED, image=init, seed=7, **settings)[0]  # the mask matters
    assert np.abs(plain - got).max() > 0.05


def test_refusals_get_one_line(tiny_qwenimage: tuple[Path, Any], tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    """--base with a folder and a folder missing a part (its tokenizer files, its VAE): one
    line each, saying which."""
    folder, _ = tiny_qwenimage
    common = ("txt2img", "--prompt", "x", *SIZE, "--steps", "1", "--out",
              str(tmp_path / "x.png"))
    assert "--base is for a single-file Qwen-Image transformer" in cli_error(
        capsys, *common, "--model", str(folder), "--base", str(folder))
    for missing in ("tokenizer", "vae"):
        broken = tmp_path / missing.split("/")[0]
        shutil.copytree(folder, broken)
        path = broken / missing
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        assert missing.split("/")[0] in cli_error(capsys, *common, "--model", str(broken))


def test_slow_tokenizer_folder(first_device: gpucore.Device,
                               tiny_qwenimage: tuple[Path, Any], tmp_path: Path) -> None:
    """A tokenizer/ of vocab.json and merges.txt (a slow Qwen2Tokenizer's, without
    tokenizer.json) gives the same prompt states as tokenizer.json."""
    import transformers

    from diffusion.pipelines.flow.qwen_image import QwenImagePipeline

    folder, _ = tiny_qwenimage
    slow = tmp_path / "qwen-image-slow"
    shutil.copytree(folder, slow)
    fast = transformers.PreTrainedTokenizerFast.from_pretrained(str(folder / "tokenizer"))
    model = fast.backend_tokenizer.model
    shutil.rmtree(slow / "tokenizer")
    model.save(str(tmp_path))  # vocab.json, merges.txt
    (slow / "tokenizer").mkdir()
    for name in ("vocab.json", "merges.txt"):
        shutil.move(str(tmp_path / name), str(slow / "tokenizer" / name))
    added = {str(i): {"content": t.content, "special": True}
             for i, t in fast.added_tokens_decoder.items()}
    (slow / "tokenizer" / "tokenizer_config.json").write_text(json.dumps(
        {"added_tokens_decoder": added, "pad_token": "<|endoftext|>"}))
    states = [QwenImagePipeline.from_pretrained(path, device=first_device).encode_prompt(
        [RED, "a cat"])[0].numpy() for path in (folder, slow)]
    np.testing.assert_array_equal(states[0], states[1])


@pytest.mark.nodevice
def test_packing_and_true_cfg() -> None:
    rng = np.random.default_rng(0)
    latents = rng.standard_normal((2, 4, 6, 10)).astype(np.float32)
    packed = pack(latents)
    assert packed.shape == (2, 15, 16)
    assert np.array_equal(packed[0, 1, :4], latents[0, 0, 0:2, 2:4].reshape(-1))
    assert np.array_equal(unpack(packed, 6, 10), latents)
    positive, negative = packed, rng.standard_normal(packed.shape).astype(np.float32)
    combined = torch.from_numpy(negative) + 4 * (torch.from_numpy(positive) -
                                                 torch.from_numpy(negative))
    expected = combined * (torch.norm(torch.from_numpy(positive), dim=-1, keepdim=True)
                           / torch.norm(combined, dim=-1, keepdim=True))
    np.testing.assert_allclose(true_cfg(positive, negative, 4.0), expected.numpy(), rtol=1e-5)


def test_qwenimage_first_block_cache(first_device: gpucore.Device,
                                     tiny_qwenimage: tuple[Path, Any], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """--cache fbc with true CFG and `--sampler diffusers`: QwenImagePipeline's picture with
    diffusers' First Block Cache on its transformer (each pass its own cache context), the
    second step of each pass skipped at a high threshold (another picture than uncached);
    TeaCache refused in one line."""
    from diffusers.hooks import FirstBlockCacheConfig

    folder, reference = tiny_qwenimage
    common = ("txt2img", "--model", str(folder), *SIZE, "--steps", "3", "--sampler",
              "diffusers", "--rng", "torch", "--seed", "7", "--dtype", "float32", "--prompt",
              RED, "--negative-prompt", "a photo of a cat", "--cfg-scale", "4")
    out, _ = cli_ok(capsys, *common, "--out", str(tmp_path / "plain.png"))
    plain = png_pixels(out)
    out, _ = cli_ok(capsys, *common, "--cache", "fbc:9", "--out", str(tmp_path / "fbc.png"))
    cached = png_pixels(out)
    text = read_infotext(out)
    assert text is not None and 'Cache: "fbc 9, 2/6 model calls computed"' in text
    assert np.abs(cached - plain).mean() > 0.005  # the skips matter (the test's premise)
    reference.transformer.enable_cache(FirstBlockCacheConfig(threshold=9.0))
    try:
        expected = reference(RED, negative_prompt="a photo of a cat", true_cfg_scale=4.0,
                             height=24, width=40, num_inference_steps=3,
                             generator=torch.Generator().manual_seed(7),
                             output_type="np").images[0]
    finally:
        reference.transformer.disable_cache()
    assert np.abs(cached - expected).mean() < 0.01
    # ... and much nearer diffusers' cached picture than the uncached one is
    assert np.abs(cached - expected).mean() < np.abs(cached - plain).mean() / 4
    code = cli.main([*common, "--cache", "teacache", "--out", str(tmp_path / "t.png")])
    err = capsys.readouterr().err
    assert code != 0 and "teacache: not supported" in err and "it runs fbc" in err
    assert "Traceback" not in err


def _comfyui_file(model: Any, path: Path, prefix: str = "model.diffusion_model.") -> Path:
    save_file({prefix + k: v.detach().clone() for k, v in model.state_dict().items()},
              str(path))
    return path


@pytest.mark.nodevice
@pytest.mark.parametrize("prefix", ["model.diffusion_model.", ""])
def test_file_reads_as_diffusers(tiny_qwenimage: tuple[Path, Any], tmp_path: Path,
                                 prefix: str) -> None:
    _, reference = tiny_qwenimage
    file = _comfyui_file(reference.transformer, tmp_path / "qwen_image.safetensors", prefix)
    assert qwenimage_family(file) == "qwen-image"
    weights = load_qwenimage_file(file, config={"axes_dims_rope": (4, 6, 6)})
    expected = state_dict(reference.transformer)
    assert set(weights) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(weights[key], value, err_msg=key)
    for name in ("in_channels", "out_channels", "num_layers", "attention_head_dim",
                 "num_attention_heads", "joint_attention_dim", "patch_size"):
        assert weights.config[name] == QWENIMAGE_TINY[name], name


@pytest.mark.nodevice
def test_other_files_are_not_claimed(tiny_qwenimage: tuple[Path, Any], tmp_path: Path) -> None:
    import torch

    file = tmp_path / "other.safetensors"
    save_file({"transformer_blocks.0.weight": torch.zeros(2)}, str(file))
    assert qwenimage_family(file) is None
    with pytest.raises(WeightsError, match="not a Qwen-Image transformer file"):
        load_qwenimage_file(file)
    _, reference = tiny_qwenimage
    edit = {k: v.detach().clone() for k, v in reference.transformer.state_dict().items()}
    edit["__index_timestep_zero__"] = torch.zeros(0)
    save_file(edit, str(tmp_path / "qwen_image_edit_2511.safetensors"))
    with pytest.raises(WeightsError, match=r"Qwen-Image-Edit 2511 .* not supported"):
        load_qwenimage_file(tmp_path / "qwen_image_edit_2511.safetensors")


def test_transformer_file_with_base(first_device: gpucore.Device,
                                    tiny_qwenimage: tuple[Path, Any], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """ComfyUI's split diffusion model file with the folder as --base: the folder's own
    picture bitwise, a GGUF of it near it; without --base, or a folder given --base, one
    line each."""
    folder, reference = tiny_qwenimage
    file = _comfyui_file(reference.transformer, tmp_path / "qwen_image_bf16.safetensors")
    out, err = cli_ok(capsys, *FILES, "--model", str(file), "--base", str(folder),
                      "--out", str(tmp_path / "file.png"))
    assert "model: qwen_image_bf16 (qwen-image)" in err
    single = png_pixels(out)
    out, _ = cli_ok(capsys, *FILES, "--model", str(folder), "--out", str(tmp_path / "dir.png"))
    np.testing.assert_array_equal(single, png_pixels(out))
    assert "--base" in cli_error(capsys, *FILES, "--model", str(file),
                                 "--out", str(tmp_path / "x.png"))
    assert "leave --base out" in cli_error(capsys, *FILES, "--model", str(folder), "--base",
                                           str(folder), "--out", str(tmp_path / "x.png"))
    pytest.importorskip("gguf", reason="GGUF files need the gguf package")
    from diffusion.loaders.formats.gguf_write import write_gguf

    gguf = tmp_path / "qwen-image-Q8_0.gguf"
    write_gguf(gguf, state_dict(reference.transformer).items(), "q8_0",
               architecture="qwen_image")
    out, err = cli_ok(capsys, *FILES, "--model", str(gguf), "--base", str(folder),
                      "--out", str(tmp_path / "gguf.png"))
    assert np.abs(png_pixels(out) - single).mean() < 0.01
    assert "model: qwen-image-Q8_0 (" in err  # as Forge names it: no .gguf


def test_text_encoder_file(first_device: gpucore.Device, tiny_qwenimage: tuple[Path, Any],
                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """ComfyUI's Qwen2.5-VL file (transformers 4's names: the language model under model.,
    the vision tower under visual., lm_head) with a folder whose text_encoder/ holds its
    config alone: the folder's own picture, the file named in the infotext; a file whose
    attention has no biases (no Qwen2.5-VL) gets one line."""
    folder, reference = tiny_qwenimage
    state = {}
    for key, value in reference.text_encoder.state_dict().items():
        key = key.replace("model.language_model.", "model.").replace("model.visual.",
                                                                     "visual.")
        state[key] = value.detach().clone()
    assert "visual.merger.mlp.0.weight" in state and "lm_head.weight" in state
    save_file(state, str(tmp_path / "qwen_2.5_vl_7b.safetensors"))
    slim = tmp_path / "qwen-image"
    shutil.copytree(folder, slim)
    for weights in (slim / "text_encoder").glob("*.safetensors*"):
        weights.unlink()
    out, _ = cli_ok(capsys, *FILES, "--model", str(slim), "--text-encoder",
                    str(tmp_path / "qwen_2.5_vl_7b.safetensors"), "--out",
                    str(tmp_path / "te.png"))
    text = read_infotext(out)
    assert text is not None and "Module 1: qwen_2.5_vl_7b" in text
    single = png_pixels(out)
    out, _ = cli_ok(capsys, *FILES, "--model", str(folder), "--out", str(tmp_path / "dir.png"))
    np.testing.assert_array_equal(single, png_pixels(out))
    unbiased = {k: v for k, v in state.items() if not k.endswith("_proj.bias")}
    save_file(unbiased, str(tmp_path / "qwen3.safetensors"))
    import transformers

    narrow = transformers.Qwen2Model(transformers.Qwen2Config(
        vocab_size=300, hidden_size=24, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2))
    save_file({k: v.detach().clone() for k, v in narrow.state_dict().items()},
              str(tmp_path / "qwen_2.5_vl_other.safetensors"))
    assert "the transformer reads 40" in cli_error(
        capsys, *FILES, "--model", str(slim), "--text-encoder",
        str(tmp_path / "qwen_2.5_vl_other.safetensors"), "--out", str(tmp_path / "x.png"))
    assert "not a Qwen2.5-VL text encoder" in cli_error(
        capsys, *FILES, "--model", str(slim), "--text-encoder",
        str(tmp_path / "qwen3.safetensors"), "--out", str(tmp_path / "x.png"))


@pytest.mark.nodevice
def test_text_encoder_gguf_reads_as_transformers(tiny_qwenimage: tuple[Path, Any],
                                                 tmp_path: Path) -> None:
    """A llama.cpp GGUF of Qwen2.5-VL's language model (its names, q/k/v biases included)
    reads under transformers' names with the folder's config."""
    pytest.importorskip("gguf", reason="GGUF files need the gguf package")
    from diffusion.loaders.formats.gguf_write import write_gguf
    from diffusion.loaders.qwen_image import language_model_config
    from diffusion.loaders.z_image import load_llm_file

    folder, reference = tiny_qwenimage
    layer = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
             "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    expected = {k.removeprefix("model.language_model."): v.numpy()
                for k, v in reference.text_encoder.state_dict().items()
                if k.startswith("model.language_model.")}
    tensors = []
    for key, value in expected.items():
        stem, _, kind = key.rpartition(".")
        if stem in ("embed_tokens", "norm"):
            name = {"embed_tokens": "token_embd", "norm": "output_norm"}[stem]
        else:
            _, index, rest = stem.split(".", 2)
            name = f"blk.{index}.{layer[rest]}"
        tensors.append((f"{name}.{kind}", value))
    path = tmp_path / "Qwen2.5-VL-tiny-F16.gguf"
    write_gguf(path, tensors, "f16", architecture="qwen2vl")
    config = language_model_config(json.loads((folder / "text_encoder" / "config.json")
                                              .read_text()))
    weights = load_llm_file(path, kind="qwen2_5_vl", config=config)
    assert set(weights) == set(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(weights[key], value, rtol=1e-3, atol=1e-3, err_msg=key)
    assert weights.config["model_type"] == "qwen2_5_vl_text"
    for name in ("num_attention_heads", "num_key_value_heads", "num_hidden_layers",
                 "hidden_size", "intermediate_size"):
        assert weights.config[name] == config[name], name
    with pytest.raises(WeightsError, match="not a Qwen3 text encoder"):
        load_llm_file(path)

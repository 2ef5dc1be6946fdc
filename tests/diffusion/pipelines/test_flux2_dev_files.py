"""FLUX.2 dev from the files people download, each with a FLUX.2 dev folder as --base whose
transformer/ and text_encoder/ hold no weights: Black Forest Labs' bf16 transformer and
ComfyUI's mixed fp8 one, ComfyUI's Mistral Small 3.1 text encoder in bf16 and scaled fp8, all
giving the folder's own picture bitwise (the folder's weights rounded to what the files hold);
a GGUF of the transformer (kept quantized) near it. What is missing or mismatched gets one
line that says which file to add."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
from cli_support import cli_error, cli_ok, png_pixels
from flux2_dev_files import exact_for_files
from flux2_dev_tiny import tiny_flux2_dev_pipeline
from flux2_tiny import FLUX2_TINY
from safetensors.torch import save_file

import gpucore
from diffusion.infotext import read_infotext
from diffusion.loaders.flux2 import flux2_family, load_flux2_file
from diffusion.pipelines.families import family_of

FILES = ("txt2img", "--prompt", "a red circle", "--width", "24", "--height", "16", "--steps",
         "2", "--sampler", "diffusers", "--rng", "torch", "--seed", "7", "--dtype", "float32",
         "--distilled-cfg-scale", "4")


REFERENCE: dict[str, Any] = {}


@pytest.fixture(scope="module")
def dev_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Path]]:
    """(the folder, a copy of it without transformer and text encoder weights, the files);
    diffusers' pipeline of the folder kept as `REFERENCE["pipe"]`."""
    root = tmp_path_factory.mktemp("tiny-flux2-dev-files")
    pipe = tiny_flux2_dev_pipeline(root)
    tensors = exact_for_files(pipe)
    REFERENCE["pipe"] = pipe
    folder = root / "flux2-dev"
    pipe.save_pretrained(folder)
    names = {"transformer": "flux2-dev.safetensors",
             "transformer_fp8": "flux2_dev_fp8mixed.safetensors",
             "mistral": "mistral_3_small_flux2_bf16.safetensors",
             "mistral_fp8": "mistral_3_small_flux2_fp8.safetensors"}
    files = {}
    for kind, name in names.items():
        files[kind] = root / name
        save_file(tensors[kind], str(files[kind]))
    slim = root / "flux2-dev-slim"
    shutil.copytree(folder, slim)
    for part in ("transformer", "text_encoder"):
        for weights in (slim / part).glob("*.safetensors*"):
            weights.unlink()
    return folder, slim, files


def _folder_picture(capsys: pytest.CaptureFixture[str], folder: Path, tmp_path: Path
                    ) -> np.ndarray:
    """The folder's own picture, drawn once for the module."""
    if "picture" not in REFERENCE:
        out, _ = cli_ok(capsys, *FILES, "--model", str(folder), "--out", str(tmp_path / "d.png"))
        REFERENCE["picture"] = png_pixels(out)
    return REFERENCE["picture"]  # type: ignore[no-any-return]


def test_dev_files_give_the_folders_picture(first_device: gpucore.Device,
                                            dev_files: tuple[Path, Path, dict[str, Path]],
                                            tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    folder, slim, files = dev_files
    expected = _folder_picture(capsys, folder, tmp_path)
    assert expected.std() > 0.02  # a picture, not a flat field
    # the fp8 files under --lowvram too (FLUX.2 dev on a 24 GB card): the same picture
    for transformer, text_encoder, mode in (("transformer", "mistral", ()),
                                            ("transformer_fp8", "mistral_fp8", ("--lowvram",))):
        assert flux2_family(files[transformer]) == "flux2-dev"
        assert family_of(files[transformer])[1] == "flux2-dev"
        out, err = cli_ok(capsys, *FILES, *mode, "--model", str(files[transformer]), "--base",
                          str(slim), "--text-encoder", str(files[text_encoder]),
                          "--out", str(tmp_path / f"{transformer}.png"))
        assert f"model: {files[transformer].stem} (flux2-dev)" in err
        text = read_infotext(out)
        assert text is not None and f"Module 1: {files[text_encoder].stem}" in text
        np.testing.assert_array_equal(png_pixels(out), expected, err_msg=transformer)


def test_dev_gguf_kept_quantized(first_device: gpucore.Device,
                                 dev_files: tuple[Path, Path, dict[str, Path]],
                                 tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """city96's GGUF of the transformer (BFL's names, Q8_0 matrices): FLUX.2 dev, its blocks
    kept on the GPU, a picture near the folder's."""
    pytest.importorskip("gguf", reason="GGUF files need the gguf package")
    from diffusion.loaders.formats.gguf_write import write_gguf
    from diffusion.loaders.formats.safetensors import SafetensorsFile
    from diffusion.pipelines.flow.flux2_dev import Flux2Pipeline
    from gpustd.nn.quantized import quantized_weights

    folder, slim, files = dev_files
    gguf = tmp_path / "flux2-dev-Q8_0.gguf"
    stored = SafetensorsFile(files["transformer"])  # bf16, read as float32
    write_gguf(gguf, ((k.removeprefix("model.diffusion_model."), stored.read(k))
                      for k in stored.keys()), "q8_0", architecture="flux2")
    assert flux2_family(gguf) == "flux2-dev"
    weights = load_flux2_file(gguf, config={"axes_dims_rope": FLUX2_TINY["axes_dims_rope"]})
    assert weights.config["guidance_embeds"] is True
    assert "time_guidance_embed.guidance_embedder.linear_1.weight" in weights
    pipe = Flux2Pipeline.from_pretrained(slim, device=first_device, transformer_file=gguf,
                                         text_encoder_files=[files["mistral"]])
    assert quantized_weights(pipe.transformer)  # the Q8_0 matrices stay blocks
    del pipe
    expected = _folder_picture(capsys, folder, tmp_path)
    out, _ = cli_ok(capsys, *FILES, "--model", str(gguf), "--base", str(slim), "--text-encoder",
                    str(files["mistral"]), "--out", str(tmp_path / "gguf.png"))
    assert np.abs(png_pixels(out) - expected).mean() < 0.01


def test_dev_files_refusals(dev_files: tuple[Path, Path, dict[str, Path]], tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    """Each missing or mismatched companion in one line naming what to give."""
    from safetensors.numpy import save_file as save_numpy

    _folder, slim, files = dev_files
    out = str(tmp_path / "x.png")
    assert "--base" in cli_error(capsys, *FILES, "--model", str(files["transformer"]), "--out", out)
    klein = tmp_path / "flux2-klein"  # a klein folder is told by its model_index.json
    klein.mkdir()
    (klein / "model_index.json").write_text(json.dumps({"_class_name": "Flux2KleinPipeline"}))
    assert "give a FLUX.2 dev folder" in cli_error(
        capsys, *FILES, "--model", str(files["transformer"]), "--base", str(klein), "--out", out)
    qwen3 = tmp_path / "qwen_3_4b.safetensors"  # q/k norms: a Qwen3's layers
    save_numpy({"model.layers.0.self_attn.q_proj.weight": np.zeros((8, 8), np.float32),
                "model.layers.0.self_attn.q_norm.weight": np.ones(4, np.float32)}, str(qwen3))
    assert "not a Mistral text encoder" in cli_error(
        capsys, *FILES, "--model", str(files["transformer"]), "--base", str(slim),
        "--text-encoder", str(qwen3), "--out", out)
    assert "--text-encoder" in cli_error(capsys, *FILES, "--model", str(files["transformer"]),
                                         "--base", str(slim), "--out", out)


def _llama_cpp(tensors: dict[str, np.ndarray], heads: int, kv_heads: int
               ) -> dict[str, np.ndarray]:
    """A Mistral language model's tensors (ComfyUI's names) as llama.cpp's converter writes
    them: its names, q and k rows reordered per head for its rotary layout
    (convert_hf_to_gguf.py LlamaModel.permute)."""
    layer = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
             "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    out = {}
    for key, value in tensors.items():
        if key == "model.embed_tokens.weight":
            out["token_embd.weight"] = value
        elif key == "model.norm.weight":
            out["output_norm.weight"] = value
        elif key.startswith("model.layers."):
            index, rest = key.removeprefix("model.layers.").split(".", 1)
            stem, kind = rest.rsplit(".", 1)
            name = layer[stem]
            if name in ("attn_q", "attn_k"):
                count = heads if name == "attn_q" else kv_heads
                value = (value.reshape(count, 2, -1, value.shape[1]).swapaxes(1, 2)
                         .reshape(value.shape))
            out[f"blk.{index}.{name}.{kind}"] = value
    return out


@pytest.mark.nodevice
def test_llama_gguf_rows_back_in_order(tmp_path: Path) -> None:
    """A Q8_0 q matrix (rows whole blocks) of a "llama" GGUF: its rows read back in
    transformers' order, dequantized on the host and as the blocks kept on the GPU alike."""
    pytest.importorskip("gguf", reason="GGUF files need the gguf package")
    import gguf

    from diffusion.loaders.formats.gguf_llama import LlamaGGUFFile
    from diffusion.loaders.formats.gguf_write import write_gguf

    rng = np.random.default_rng(3)
    hf = {"model.layers.0.self_attn.q_proj.weight": rng.standard_normal((48, 64)),
          "model.layers.0.self_attn.k_proj.weight": rng.standard_normal((24, 64))}
    path = tmp_path / "mistral-tiny-Q8_0.gguf"
    write_gguf(path, _llama_cpp(hf, 4, 2).items(), "q8_0", architecture="llama",
               metadata={"llama.attention.head_count": "4",
                         "llama.attention.head_count_kv": "2"})
    file = LlamaGGUFFile(path)
    for key, stored in (("blk.0.attn_q.weight", hf["model.layers.0.self_attn.q_proj.weight"]),
                        ("blk.0.attn_k.weight", hf["model.layers.0.self_attn.k_proj.weight"])):
        assert file.format(key) == "q8_0"
        values = file.read(key)
        assert np.abs(values - stored).max() < 0.02 * np.abs(stored).max()
        blocks = gguf.quants.dequantize(file.raw(key), gguf.GGMLQuantizationType.Q8_0)
        np.testing.assert_array_equal(blocks.reshape(values.shape), values)
        np.testing.assert_array_equal(file.read(key, rows=(8, 20)), values[8:20])


def test_mistral_gguf(first_device: gpucore.Device,
                      dev_files: tuple[Path, Path, dict[str, Path]], tmp_path: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    """llama.cpp's GGUF of the Mistral text encoder (architecture "llama", q/k permuted):
    FLUX.2 dev's picture near the folder's, where the permuted rows read as they are would
    make another."""
    pytest.importorskip("gguf", reason="GGUF files need the gguf package")
    from flux2_dev_tiny import MISTRAL_TINY

    from diffusion.loaders.formats.gguf_write import write_gguf
    from diffusion.loaders.formats.safetensors import SafetensorsFile

    folder, slim, files = dev_files
    stored = SafetensorsFile(files["mistral"])
    tensors = {k: stored.read(k) for k in stored.keys() if k.startswith("model.")}
    heads, kv_heads = MISTRAL_TINY["num_attention_heads"], MISTRAL_TINY["num_key_value_heads"]
    meta = {"llama.attention.head_count": str(heads),
            "llama.attention.head_count_kv": str(kv_heads)}
    gguf = tmp_path / "Mistral-Small-3.1-tiny-Q8_0.gguf"
    write_gguf(gguf, _llama_cpp(tensors, heads, kv_heads).items(), "q8_0",
               architecture="llama", metadata=meta)
    common = (*FILES, "--model", str(files["transformer"]), "--base", str(slim))
    expected = _folder_picture(capsys, folder, tmp_path)  # the bf16 files' (the first test)
    out, _ = cli_ok(capsys, *common, "--text-encoder", str(gguf), "--out", str(tmp_path / "q.png"))
    assert np.abs(png_pixels(out) - expected).mean() < 0.005
    unordered = tmp_path / "Mistral-unordered.gguf"  # the rows left as llama.cpp stores them
    write_gguf(unordered, _llama_cpp(tensors, heads, kv_heads).items(), "q8_0",
               architecture="mistral-unordered", metadata=meta)
    out, _ = cli_ok(capsys, *common, "--text-encoder", str(unordered),
                    "--out", str(tmp_path / "u.png"))
    assert np.abs(png_pixels(out) - expected).mean() > 0.01


def test_left_padded_prompts_as_transformers(first_device: gpucore.Device,
                                             dev_files: tuple[Path, Path, dict[str, Path]],
                                             tmp_path: Path) -> None:
    """A tokenizer whose tokenizer_config.json pads on the left (as Mistral's may): a batch of
    two prompts of different lengths gives the ids and the stacked hidden states diffusers'
    Flux2Pipeline gives with its tokenizer padding left, with no NaN where a padded token
    attends to nothing but padding (fully masked rows), and the padding is compared too."""
    import torch

    from diffusion.pipelines.flow.flux2_dev import Flux2Pipeline

    folder = dev_files[0]
    left = tmp_path / "flux2-dev-left"
    shutil.copytree(folder, left)
    config_path = left / "tokenizer" / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "padding_side": "left"}))
    reference = REFERENCE["pipe"]
    reference.tokenizer.padding_side = "left"
    try:
        prompts = ["a red circle", "an astronaut riding a horse on the moon at night"]
        with torch.no_grad():
            expected = reference.encode_prompt(prompts, device="cpu",
                                               max_sequence_length=160)[0].numpy()
    finally:
        reference.tokenizer.padding_side = "right"
    pipe = Flux2Pipeline.from_pretrained(left, device=first_device)
    assert pipe.tokenizer.padding_side == "left"
    ours = pipe.encode_prompt(prompts, 160).numpy()
    assert np.isfinite(ours).all()
    scale = np.abs(expected).max()
    np.testing.assert_allclose(ours, expected, atol=1e-3 * scale, rtol=1e-3)
    _ids, mask = pipe.tokenizer(["a red circle"], 160, add_special_tokens=False)
    assert mask[0, 0] == 0 and mask[0, -1] == 1  # padded on the left

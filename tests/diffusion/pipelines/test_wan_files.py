"""Wan from ComfyUI's split files: a tiny Wan transformer written in Wan's original names
(`blocks.N.self_attn.q`, `norm3`, `head.head`, ...; diffusers' own converter checks the
writer), as bf16, fp8_e4m3fn and ComfyUI's scaled fp8, reads as diffusers' weights; through
`txt2vid --model FILE --base FOLDER` it gives the folder's frames (bitwise in float32, near
them as a Q8_0 GGUF), with the text encoder from a UMT5 file and a --base folder that holds
no weights of the parts files replace; what is missing or wrong gets one line."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_ok, png_frames
from PIL import Image
from safetensors.torch import save_file
from sd_tiny import randomized, state_dict
from wan_tiny import (
    WAN22_VAE_TINY,
    WAN_TINY,
    WAN_VAE_TINY,
    comfyui_file,
    original_names,
    tiny_wan_pipeline,
    torch_state,
    vae_original_names,
)

import diffusion.cli.main as cli
import gpucore
from diffusion.loaders import WeightsError
from diffusion.loaders.wan import load_wan_file, wan_file_family

RED = "a red cube on a wooden table"

@pytest.fixture(scope="module")
def tiny_wan(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    root = tmp_path_factory.mktemp("tiny-wan-files")
    return root / "wan", tiny_wan_pipeline(root)


@pytest.mark.nodevice
def test_writer_agrees_with_diffusers(tiny_wan: tuple[Path, Any]) -> None:
    """The test's original-names writer is the inverse of diffusers' converter."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    state = torch_state(tiny_wan[1].transformer)
    converted = convert_wan_transformer_to_diffusers(original_names(state,
                                                                    "model.diffusion_model."))
    assert set(converted) == set(state)


@pytest.mark.nodevice
@pytest.mark.parametrize(("form", "prefix"), [("fp32", "model.diffusion_model."),
                                              ("bf16", ""), ("fp8_e4m3fn", ""),
                                              ("fp8_scaled", "")])
def test_file_reads_as_diffusers(tiny_wan: tuple[Path, Any], tmp_path: Path, form: str,
                                 prefix: str) -> None:
    _, reference = tiny_wan
    file = tmp_path / f"wan2.1_t2v_tiny_{form}.safetensors"
    held = comfyui_file(reference.transformer, file, form, prefix)
    assert wan_file_family(file) == "wan"
    weights = load_wan_file(file, config={"num_attention_heads": 2, "attention_head_dim": 12})
    assert set(weights) == set(state_dict(reference.transformer))
    for key, value in held.items():
        np.testing.assert_array_equal(weights[key], value, err_msg=key)
    for name in ("in_channels", "out_channels", "num_layers", "text_dim", "freq_dim",
                 "ffn_dim", "num_attention_heads", "attention_head_dim"):
        assert weights.config[name] == WAN_TINY[name], name
    assert tuple(weights.config["patch_size"]) == WAN_TINY["patch_size"]


@pytest.mark.nodevice
def test_gguf_keeps_matrices_quantized(tmp_path: Path) -> None:
    """city96's GGUFs: Wan's original names, the matrices Q8_0 (kept so on the GPU by
    load_component), the rest floats; 128-wide heads when no config says otherwise."""
    pytest.importorskip("gguf", reason="GGUF files need the gguf package")
    import diffusers

    from diffusion.loaders.formats.gguf_file import GGUFFile
    from diffusion.loaders.formats.gguf_write import write_gguf

    model = diffusers.WanTransformer3DModel(**{**WAN_TINY, "attention_head_dim": 128,
                                               "num_attention_heads": 1, "ffn_dim": 64})
    expected = state_dict(model)
    path = tmp_path / "wan2.1-t2v-tiny-Q8_0.gguf"
    write_gguf(path, original_names(expected).items(), "q8_0", architecture="wan")
    weights = load_wan_file(path)
    assert weights.config["num_attention_heads"] == 1
    assert weights.config["attention_head_dim"] == 128
    ref = weights.refs["blocks.0.attn1.to_q.weight"]
    assert isinstance(ref.file, GGUFFile) and ref.file.format(ref.key) == "q8_0"
    for key, value in expected.items():
        scale = np.abs(value).max() + 1e-6
        assert np.abs(weights[key] - value).max() < 0.02 * scale, key


@pytest.mark.nodevice
def test_vae_file_reads_as_diffusers(tmp_path: Path) -> None:
    """ComfyUI's wan_2.1_vae.safetensors: Wan's original VAE names (the writer checked
    against diffusers' converter, which knows Wan 2.1's layout only: 2 residual blocks a
    level, channels x1 x2 x4 x4)."""
    import diffusers
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    from diffusion.loaders.wan.vae_file import load_wan_vae_file

    config = {**WAN_VAE_TINY, "num_res_blocks": 2, "dim_mult": [1, 2, 4, 4]}
    vae = diffusers.AutoencoderKLWan(**config)
    state = torch_state(vae)
    original = vae_original_names(state, 2)
    assert set(convert_wan_vae_to_diffusers(dict(original))) == set(state)
    path = tmp_path / "wan_2.1_vae.safetensors"
    save_file(original, str(path))
    weights = load_wan_vae_file(path, dict(vae.config), None)
    assert set(weights) == set(state)
    for key, value in state.items():
        np.testing.assert_array_equal(weights[key], value.numpy(), err_msg=key)
    with pytest.raises(WeightsError, match=r"no vae/config\.json"):
        load_wan_vae_file(path, None, None)
    with pytest.raises(WeightsError, match=r"folder's VAE is Wan 2\.2 TI2V 5B's"):
        load_wan_vae_file(path, {**config, "is_residual": True}, None)


@pytest.mark.nodevice
def test_wan22_vae_file_decodes_as_diffusers(tmp_path: Path) -> None:
    """ComfyUI's wan2.2_vae.safetensors (Wan 2.2 TI2V 5B's 48-channel VAE in Wan's original
    names, each level's residual blocks and resample nested under it, the decoder bf16) reads
    as the values diffusers holds under its names, which decode as diffusers' AutoencoderKLWan
    does (our decoder is checked against diffusers' by test_wan_vae); the file beside a Wan
    2.1 folder's config is refused in one line."""
    import diffusers

    from diffusion.loaders.wan.vae_file import is_wan22_vae, load_wan_vae_file

    rng = np.random.default_rng(9)
    config = {**WAN22_VAE_TINY, "z_dim": 48, "latents_mean": rng.normal(0, 0.5, 48).tolist(),
              "latents_std": rng.uniform(0.5, 2, 48).tolist()}
    reference = randomized(diffusers.AutoencoderKLWan(**config), 10)
    state = {k: v.to(torch.bfloat16) if k.startswith("decoder.") else v
             for k, v in torch_state(reference).items()}
    original = vae_original_names(state, config["num_res_blocks"], wan22=True)
    assert is_wan22_vae(original) and not any("_blocks." in key for key in original)
    path = tmp_path / "wan2.2_vae.safetensors"
    save_file(original, str(path))
    weights = load_wan_vae_file(path, dict(reference.config), None)
    assert set(weights) == set(state)
    for key, value in state.items():
        np.testing.assert_array_equal(weights[key], value.float().numpy(), err_msg=key)
    reference.load_state_dict({k: v.float() for k, v in state.items()})
    loaded = diffusers.AutoencoderKLWan(**config)
    loaded.load_state_dict({key: torch.from_numpy(np.asarray(weights[key]))
                            for key in weights}, strict=True)
    latents = torch.from_numpy(rng.standard_normal((1, 48, 2, 2, 3)).astype(np.float32))
    with torch.no_grad():
        expected = reference.decode(latents).sample.numpy()
        got = loaded.decode(latents).sample.numpy()
    assert got.shape == (1, 3, 5, 32, 48) and np.abs(got).mean() > 0.05
    np.testing.assert_allclose(got, expected, atol=1e-6)
    with pytest.raises(WeightsError, match=r"Wan 2\.2 TI2V 5B's VAE .*folder's VAE is Wan "
                                           r"2\.1's VAE: give"):
        load_wan_vae_file(path, dict(WAN_VAE_TINY), None)


@pytest.mark.nodevice
def test_other_files_are_refused(tiny_wan: tuple[Path, Any], tmp_path: Path) -> None:
    other = tmp_path / "other.safetensors"
    save_file({"blocks.0.weight": torch.zeros(2)}, str(other))
    assert wan_file_family(other) is None
    with pytest.raises(WeightsError, match="not a Wan transformer file"):
        load_wan_file(other)
    file = tmp_path / "wan.safetensors"
    comfyui_file(tiny_wan[1].transformer, file)
    with pytest.raises(WeightsError, match="give --base the diffusers folder"):
        load_wan_file(file)  # 24 wide: no 128-wide heads, and no config to say otherwise
    import diffusers

    from diffusion.loaders.wan import WanFiles, load_wan

    other = tmp_path / "wan2.2_ti2v_tiny.safetensors"  # latents the folder's VAE does not read
    comfyui_file(diffusers.WanTransformer3DModel(**{**WAN_TINY, "in_channels": 6,
                                                    "out_channels": 6}), other)
    with pytest.raises(WeightsError, match="makes 6-channel latents, the VAE"):
        load_wan(tiny_wan[0], WanFiles(transformer=other))


def _error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = cli.main(list(argv))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


SETTINGS = ("--prompt", RED, "--width", "48", "--height", "32", "--frames", "5", "--steps",
            "1", "--cfg-scale", "4", "--seed", "3", "--dtype", "float32")


def test_txt2vid_from_files(first_device: gpucore.Device, tiny_wan: tuple[Path, Any],
                            tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The transformer and text encoder as files beside a --base folder holding neither's
    weights: the folder's frames bitwise; the transformer as a Q8_0 GGUF: near them."""
    folder, reference = tiny_wan
    expected = png_frames(cli_ok(capsys, "txt2vid", "--model", str(folder), *SETTINGS,
                                 "-o", str(tmp_path / "folder"))[0])
    transformer = tmp_path / "wan2.1_t2v_tiny_fp32.safetensors"
    comfyui_file(reference.transformer, transformer, prefix="model.diffusion_model.")
    umt5 = tmp_path / "umt5_xxl_tiny.safetensors"
    save_file(torch_state(reference.text_encoder), str(umt5))
    vae = tmp_path / "wan_2.1_vae.safetensors"
    save_file(vae_original_names(torch_state(reference.vae),
                                 WAN_VAE_TINY["num_res_blocks"]), str(vae))
    base = tmp_path / "base"
    shutil.copytree(folder, base)
    for part in ("transformer", "text_encoder", "vae"):
        for weights in (base / part).glob("*.safetensors"):
            weights.unlink()
    files = ("txt2vid", "--model", str(transformer), "--base", str(base), *SETTINGS)
    out = cli_ok(capsys, *files, "--text-encoder", str(umt5), "--vae", str(vae),
                 "-o", str(tmp_path / "files"))[0]
    np.testing.assert_array_equal(png_frames(out), expected)
    # what is missing gets one line naming the file to add
    assert "--text-encoder FILE" in _error(capsys, *files, "--vae", str(vae),
                                           "-o", str(tmp_path / "x"))
    assert "--vae FILE" in _error(capsys, *files, "--text-encoder", str(umt5),
                                  "-o", str(tmp_path / "x"))
    assert "give --base" in _error(capsys, "txt2vid", "--model", str(transformer),
                                   *SETTINGS, "-o", str(tmp_path / "x"))
    assert "leave --base out" in _error(capsys, "txt2vid", "--model", str(folder), "--base",
                                        str(base), *SETTINGS, "-o", str(tmp_path / "x"))
    assert "txt2vid --model" in _error(capsys, "txt2img", "--model", str(transformer),
                                       "--prompt", "x", "--out", str(tmp_path / "x.png"))
    assert "holds no Wan transformer" in _error(
        capsys, "txt2vid", "--model", str(umt5), "--base", str(base), *SETTINGS, "-o",
        str(tmp_path / "x"))
    pytest.importorskip("gguf", reason="GGUF files need the gguf package")
    from diffusion.loaders.formats.gguf_write import write_gguf

    gguf = tmp_path / "wan2.1-t2v-tiny-Q8_0.gguf"
    write_gguf(gguf, original_names(state_dict(reference.transformer)).items(), "q8_0",
               architecture="wan")
    out = cli_ok(capsys, "txt2vid", "--model", str(gguf), "--base", str(folder), *SETTINGS,
                 "-o", str(tmp_path / "gguf"))[0]
    frames = png_frames(out)
    assert np.abs(frames - expected).mean() < 0.01


@pytest.mark.nodevice
def test_umt5_files(tmp_path: Path) -> None:
    """ComfyUI's umt5_xxl_fp8_e4m3fn_scaled.safetensors (transformers' T5 names, scaled
    float8) and city96's UMT5 GGUF (llama.cpp's names, one position bias table a block) read
    as the values they hold, the config from the shapes; a T5 v1.1 file is refused."""
    pytest.importorskip("gguf", reason="GGUF files need the gguf package")
    from flow_tiny import T5_TINY, tiny_t5
    from t5_files import scaled_fp8, write_t5_gguf
    from wan_tiny import tiny_umt5

    from diffusion.loaders.wan.files import load_umt5_file

    model = tiny_umt5()
    state = {k: v for k, v in torch_state(model).items() if k != "encoder.embed_tokens.weight"}
    stored, held = scaled_fp8(state)
    scaled = tmp_path / "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
    save_file(stored, str(scaled))
    gguf = tmp_path / "umt5-xxl-encoder-Q8_0.gguf"
    held_gguf = write_t5_gguf(model, gguf, "q8_0")
    for path, values in ((scaled, held), (gguf, held_gguf)):
        weights = load_umt5_file(path, None, None)
        assert set(weights) == set(state), path
        for key, value in values.items():
            np.testing.assert_allclose(weights[key], value, atol=1e-6, err_msg=key)
        for name in ("d_model", "d_kv", "d_ff", "num_layers", "num_heads",
                     "relative_attention_num_buckets"):
            assert weights.config[name] == T5_TINY[name], name
    t5 = tmp_path / "t5xxl_fp16.safetensors"
    save_file({k: v for k, v in torch_state(tiny_t5()).items()
               if k != "encoder.embed_tokens.weight"}, str(t5))
    with pytest.raises(WeightsError, match="not UMT5"):
        load_umt5_file(t5, None, None)


def test_clip_vision_file(first_device: gpucore.Device, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    """ComfyUI's clip_vision_h.safetensors (transformers' names under vision_model., its
    projection beside) in place of a Wan 2.1 I2V folder's image_encoder/ (which holds no
    weights, named with the file to add): WanImageToVideoPipeline's frames."""
    from diffusers.pipelines.wan import pipeline_wan, pipeline_wan_i2v
    from wan_tiny import tiny_wan_i2v_pipeline

    from diffusion.loaders.wan import WanFiles
    from diffusion.pipelines.video import WanPipeline

    # the image-to-video module calls ftfy unconditionally; WanPipeline's cleaning skips it
    monkeypatch.setattr(pipeline_wan_i2v, "prompt_clean", pipeline_wan.prompt_clean)
    reference = tiny_wan_i2v_pipeline(tmp_path)
    folder = tmp_path / "wan-i2v"
    encoder = {("" if k.startswith("vision_model.") else "vision_model.") + k: v
               for k, v in torch_state(reference.image_encoder).items()}
    encoder["visual_projection.weight"] = torch.zeros(16, 32)
    clip = tmp_path / "clip_vision_h.safetensors"
    save_file(encoder, str(clip))
    for weights in (folder / "image_encoder").glob("*.safetensors"):
        weights.unlink()
    picture = (np.random.default_rng(1).random((32, 48, 3)) * 255).astype(np.uint8)
    settings = dict(height=32, width=48, num_frames=1, num_inference_steps=1,
                    guidance_scale=3.0, seed=2, image=picture)
    with pytest.raises(WeightsError, match="--clip-vision FILE"):
        WanPipeline.from_pretrained(folder, device=first_device)
    pipe = WanPipeline.from_pretrained(folder, device=first_device,
                                       files=WanFiles(image_encoder=clip))
    ours = pipe(RED, **settings)[0]
    expected = reference(image=Image.fromarray(picture), prompt=RED, height=32, width=48,
                         num_frames=1, num_inference_steps=1, guidance_scale=3.0,
                         output_type="np", generator=torch.Generator().manual_seed(2)
                         ).frames[0]
    assert np.abs(ours - expected).mean() < 0.01


@pytest.mark.nodevice
def test_incomplete_file_is_named(tiny_wan: tuple[Path, Any], tmp_path: Path) -> None:
    state = original_names(torch_state(tiny_wan[1].transformer))
    del state["text_embedding.0.weight"]
    file = tmp_path / "wan_cut.safetensors"
    save_file(state, str(file))
    with pytest.raises(WeightsError, match=r"text_embedder\.linear_1\.weight.* is missing"):
        load_wan_file(file, config={"num_attention_heads": 2, "attention_head_dim": 12})


@pytest.mark.nodevice
def test_wan22_vae_file_beside_a_ti2v_folder(tmp_path: Path) -> None:
    """Wan 2.2 TI2V 5B from files: its folder without VAE weights asks for `--vae FILE`, and
    wan2.2_vae.safetensors given so stands in for them (the folder's config, the file's
    values)."""
    from diffusion.loaders.wan import WanFiles, WanSource, load_wan, resolve_wan

    reference = tiny_wan_pipeline(tmp_path, wan22=True)
    folder = tmp_path / "wan22"
    for weights in (folder / "vae").glob("*.safetensors"):
        weights.unlink()
    state = torch_state(reference.vae)
    vae = tmp_path / "wan2.2_vae.safetensors"
    save_file(vae_original_names(state, WAN22_VAE_TINY["num_res_blocks"], wan22=True), str(vae))
    with pytest.raises(ValueError, match=r"wan22/vae: no weights .* --vae FILE \(wan_2\.1_vae"
                                         r"\.safetensors; TI2V 5B: wan2\.2_vae"):
        resolve_wan(WanSource(model=folder))
    base, files = resolve_wan(WanSource(model=folder, vae=vae))
    assert base == folder and files == WanFiles(vae=vae)
    weights = load_wan(base, files)
    assert weights.expand_timesteps and weights.vae is not None
    assert weights.vae.config["z_dim"] == WAN22_VAE_TINY["z_dim"]
    for key, value in state.items():
        np.testing.assert_array_equal(weights.vae[key], value.numpy(), err_msg=key)

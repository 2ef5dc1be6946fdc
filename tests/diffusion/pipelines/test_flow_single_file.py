"""FLUX / SD3 single files without a diffusers folder: ComfyUI's all-in-one layout, BFL's bare
transformer with ae / clip_l / t5xxl module files, Stability's SD3 file with its CLIPs and a
separate T5. Each loads to the same tensors as the diffusers folder of the same parts, and with
the folder's tokenizers swapped for the bundled ones draws the folder pipeline's picture.

The tiny parts have the shapes that the files' configs are read from: 64-channel CLIP heads,
FLUX's 128-wide heads with (16, 56, 56) rotary axes, T5's 128-distance buckets and the real
vocabulary sizes (the bundled tokenizers' ids)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import diffusers
import torch
import transformers
from flow_tiny import FLUX_DEV_SCHEDULER, T5_TINY, bfl_checkpoint, sai_checkpoint, tiny_t5_tokenizer
from ldm_files import ldm_vae
from safetensors.torch import save_file
from sd_tiny import CLIP_TINY, VAE_TINY, randomized, write_tokenizer
from support import assert_close

import gpucore
from diffusion.loaders.errors import WeightsError
from diffusion.loaders.flow.file import flow_model_family, load_flow_file
from diffusion.pipelines.flow.flux import FluxPipeline
from diffusion.pipelines.flow.sd3 import StableDiffusion3Pipeline
from diffusion.text.t5_tokenizer import T5Tokenizer
from diffusion.text.tokenizer import CLIPTokenizer

T5_FILE = {**T5_TINY, "vocab_size": 32128, "relative_attention_max_distance": 128}


def _clip(seed: int, projection: bool = False, act: str = "quick_gelu") -> Any:
    """CLIP-L (quick_gelu) or, with `act` "gelu", OpenCLIP-G's form."""
    config = transformers.CLIPTextConfig(**{**CLIP_TINY, "hidden_size": 64,
                                            "num_attention_heads": 1}, projection_dim=32,
                                         hidden_act=act)
    kind = transformers.CLIPTextModelWithProjection if projection else transformers.CLIPTextModel
    return randomized(kind(config), seed)


def _t5(d_model: int = 32) -> Any:
    config = transformers.T5Config(**{**T5_FILE, "d_model": d_model})
    return randomized(transformers.T5EncoderModel(config), 6)


def _vae(shift: tuple[float, float]) -> Any:
    return randomized(diffusers.AutoencoderKL(
        **VAE_TINY, use_quant_conv=False, use_post_quant_conv=False, scaling_factor=shift[0],
        shift_factor=shift[1]), 2)


def _under(prefix: str, model: Any) -> dict[str, Any]:
    """`model`'s tensors under `prefix` as the shared files name them: a CLIP's under
    "text_model." (which transformers >= 5.6 no longer writes), T5's without its tied
    embedding copy."""
    clip = isinstance(model, transformers.CLIPPreTrainedModel)

    def name(key: str) -> str:
        plain = key.removeprefix("text_model.")
        return "text_model." + plain if clip and not plain.startswith("text_projection") else key

    return {prefix + name(k): v.contiguous() for k, v in model.state_dict().items()
            if k != "encoder.embed_tokens.weight"}


def _same_tensors(ours: Any, theirs: Any) -> None:
    got, expected = ours.state_dict(), theirs.state_dict()
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


@pytest.fixture(scope="module")
def flux(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    root = tmp_path_factory.mktemp("flux-file")
    transformer = randomized(diffusers.FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
        attention_head_dim=128, num_attention_heads=1, joint_attention_dim=32,
        pooled_projection_dim=64, axes_dims_rope=(16, 56, 56), guidance_embeds=True), 7)
    parts = {"transformer": transformer, "vae": _vae((0.3611, 0.1159)), "clip": _clip(3),
             "t5": _t5()}
    folder = _flux_folder(root, parts)
    state = {**bfl_checkpoint(transformer, "model.diffusion_model.", bf16=False),
             **ldm_vae(parts["vae"].state_dict()),
             **_under("text_encoders.clip_l.transformer.", parts["clip"]),
             **_under("text_encoders.t5xxl.transformer.", parts["t5"])}
    save_file(state, str(root / "flux1-dev-comfy.safetensors"))
    save_file(bfl_checkpoint(transformer, "", bf16=False), str(root / "flux1-dev.safetensors"))
    ae = ldm_vae(parts["vae"].state_dict())
    save_file({k.removeprefix("first_stage_model."): v for k, v in ae.items()},
              str(root / "ae.safetensors"))
    save_file(_under("", parts["clip"]), str(root / "clip_l.safetensors"))
    save_file(_under("", parts["t5"]), str(root / "t5xxl_fp16.safetensors"))
    return root, folder


def _flux_folder(root: Path, parts: dict[str, Any]) -> Path:
    """The same parts as a diffusers FluxPipeline folder (tokenizers: stand-ins; the test
    swaps ours in)."""
    write_tokenizer(root / "clip-tokenizer")
    tiny_t5_tokenizer(root / "t5-tokenizer")
    pipe = diffusers.FluxPipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**FLUX_DEV_SCHEDULER),
        vae=parts["vae"], text_encoder=parts["clip"],
        tokenizer=transformers.CLIPTokenizer(str(root / "clip-tokenizer" / "vocab.json"),
                                             str(root / "clip-tokenizer" / "merges.txt"),
                                             model_max_length=77),
        text_encoder_2=parts["t5"], tokenizer_2=transformers.T5TokenizerFast(
            tokenizer_file=str(root / "t5-tokenizer" / "tokenizer.json")),
        transformer=parts["transformer"])
    pipe.save_pretrained(root / "folder")
    return root / "folder"


def _draw(pipe: Any) -> np.ndarray:
    return pipe("a red circle on a blue background", height=32, width=32, num_inference_steps=2,
                guidance_scale=3.5, seed=1, max_sequence_length=16, output_type="latent")


@pytest.fixture(scope="module")
def flux_folder_pipe(first_device: gpucore.Device, flux: tuple[Path, Any]) -> Any:
    """Our pipeline of the diffusers folder, with the bundled tokenizers in its folder's
    stand-ins' place."""
    reference = FluxPipeline.from_pretrained(flux[1], device=first_device)
    reference.tokenizer, reference.tokenizer_2 = CLIPTokenizer(), T5Tokenizer()
    return reference


@pytest.mark.parametrize("layout", ["comfy", "bfl+modules"])
def test_flux_file_without_folder(first_device: gpucore.Device, flux: tuple[Path, Any],
                                  flux_folder_pipe: Any, layout: str) -> None:
    """Same tensors as the folder's, both layouts; the ComfyUI file also draws the folder's
    latents bit for bit."""
    root, folder = flux
    if layout == "comfy":
        file, modules = root / "flux1-dev-comfy.safetensors", []
    else:
        file = root / "flux1-dev.safetensors"
        modules = [root / "ae.safetensors", root / "clip_l.safetensors",
                   root / "t5xxl_fp16.safetensors"]
    assert flow_model_family(file) == "flux-dev" and flow_model_family(folder) == "flux-dev"
    ours = FluxPipeline.from_pretrained(file, text_encoder_files=modules, device=first_device)
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        _same_tensors(getattr(ours, name), getattr(flux_folder_pipe, name))
    assert ours.scheduler_config["use_dynamic_shifting"] and ours.modules == [
        m.name.removesuffix(".safetensors") for m in modules]
    if layout == "comfy":
        np.testing.assert_array_equal(_draw(ours), _draw(flux_folder_pipe))


def test_text_encoder_clip_named_as_transformers_saves_it(
        first_device: gpucore.Device, flux: tuple[Path, Any], tmp_path: Path) -> None:
    """A CLIP-L file without "text_model." in its names (transformers >= 5.6 saves it so)
    given with --text-encoder beside a FLUX folder takes the folder's CLIP's place."""
    folder = flux[1]
    clip = _clip(9)
    path = tmp_path / "clip_l.safetensors"
    save_file({k.removeprefix("text_model."): v.contiguous() for k, v in clip.state_dict().items()},
              str(path))
    ours = FluxPipeline.from_pretrained(folder, text_encoder_files=[path], device=first_device)
    got = ours.text_encoder.state_dict()
    for key, value in clip.state_dict().items():
        np.testing.assert_array_equal(got[key.removeprefix("text_model.")], value.numpy(),
                                      err_msg=key)
    assert ours.modules == ["clip_l"]


def test_flux_file_names_what_is_missing(flux: tuple[Path, Any]) -> None:
    root, _ = flux
    with pytest.raises(WeightsError, match=r"no ae\.safetensors.*clip_l.*t5xxl.*--text-encoder"):
        FluxPipeline.from_pretrained(root / "flux1-dev.safetensors")
    with pytest.raises(WeightsError, match="no VAE or text encoder"):
        FluxPipeline.from_pretrained(root / "flux1-dev.safetensors",
                                     text_encoder_files=[root / "flux1-dev.safetensors"])



@pytest.mark.nodevice
def test_flux_file_takes_a_diffusers_vae(flux: tuple[Path, Any]) -> None:
    """The VAE as diffusers names it (the FLUX repo's vae/diffusion_pytorch_model) takes ae's
    place: the same tensors."""
    root, folder = flux
    encoders = [root / "clip_l.safetensors", root / "t5xxl_fp16.safetensors"]
    expected, _ = load_flow_file(root / "flux1-dev.safetensors",
                                 [root / "ae.safetensors", *encoders])
    got, _ = load_flow_file(root / "flux1-dev.safetensors",
                            [folder / "vae" / "diffusion_pytorch_model.safetensors", *encoders])
    assert got.vae.config == expected.vae.config and sorted(got.vae) == sorted(expected.vae)
    for key in expected.vae:
        np.testing.assert_array_equal(got.vae[key], expected.vae[key], err_msg=key)


@pytest.mark.nodevice
def test_flux_file_refuses_clip_g(flux: tuple[Path, Any], tmp_path: Path) -> None:
    """A CLIP-G, which FLUX has no slot for, is named, not loaded as its T5."""
    root, _ = flux
    encoders = [root / "clip_l.safetensors", root / "t5xxl_fp16.safetensors"]
    clip_g = tmp_path / "clip_g.safetensors"
    save_file(_under("", _clip(4, True, act="gelu")), str(clip_g))
    with pytest.raises(WeightsError, match="a CLIP-G text encoder, which flux-dev models do "
                                           "not take"):
        load_flow_file(root / "flux1-dev.safetensors", [root / "ae.safetensors", *encoders,
                                                        clip_g])

def test_sd3_file_without_folder(first_device: gpucore.Device, tmp_path: Path) -> None:
    """sd3_medium_incl_clips-style file (transformer, VAE, CLIP-L, CLIP-G) and a t5xxl file;
    against the folder of the same parts."""
    transformer = randomized(diffusers.SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=16, num_layers=2, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=80, caption_projection_dim=16,
        pooled_projection_dim=64, out_channels=16, pos_embed_max_size=12, qk_norm="rms_norm",
        dual_attention_layers=(0,)), 9)
    vae = _vae((1.5305, 0.0609))
    clip_l, clip_g, t5 = _clip(3, True), _clip(4, True, act="gelu"), _t5(80)
    write_tokenizer(tmp_path / "clip-tokenizer")
    tiny_t5_tokenizer(tmp_path / "t5-tokenizer")
    clip_tokenizer = transformers.CLIPTokenizer(str(tmp_path / "clip-tokenizer" / "vocab.json"),
                                                str(tmp_path / "clip-tokenizer" / "merges.txt"),
                                                model_max_length=77)
    diffusers.StableDiffusion3Pipeline(
        transformer=transformer, scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae, text_encoder=clip_l, tokenizer=clip_tokenizer, text_encoder_2=clip_g,
        tokenizer_2=clip_tokenizer, text_encoder_3=t5,
        tokenizer_3=transformers.T5TokenizerFast(
            tokenizer_file=str(tmp_path / "t5-tokenizer" / "tokenizer.json")),
    ).save_pretrained(tmp_path / "sd3")
    file = tmp_path / "sd3_medium_incl_clips.safetensors"
    save_file({**{"model.diffusion_model." + k: v.contiguous()
                  for k, v in sai_checkpoint(transformer).items()},
               **ldm_vae(vae.state_dict()),
               **_under("text_encoders.clip_l.transformer.", clip_l),
               **_under("text_encoders.clip_g.transformer.", clip_g)}, str(file))
    save_file(_under("", t5), str(tmp_path / "t5xxl_fp8.safetensors"))
    assert flow_model_family(file) == "sd3"
    without_t5, _ = load_flow_file(file)  # runs with zero T5 states, as diffusers
    assert without_t5.text_encoder_3 is None and without_t5.text_encoder_2 is not None
    ours = StableDiffusion3Pipeline.from_pretrained(
        file, text_encoder_files=[tmp_path / "t5xxl_fp8.safetensors"], device=first_device)
    reference = StableDiffusion3Pipeline.from_pretrained(tmp_path / "sd3", device=first_device)
    for name in ("transformer", "vae", "text_encoder_3"):
        _same_tensors(getattr(ours, name), getattr(reference, name))
    for (ours_clip, _), (reference_clip, _) in zip(ours.clips, reference.clips):
        _same_tensors(ours_clip, reference_clip)
    assert ours.clips[1][1].pad_token == "!" and ours.scheduler_config["shift"] == 3.0
    reference.clips = ((reference.clips[0][0], CLIPTokenizer()),
                       (reference.clips[1][0], CLIPTokenizer(pad_token="!")))
    reference.tokenizer_3 = T5Tokenizer()
    draw = {"height": 32, "width": 32, "num_inference_steps": 2, "guidance_scale": 5.0,
            "seed": 2, "max_sequence_length": 16, "output_type": "latent"}
    np.testing.assert_array_equal(ours("a red circle", **draw), reference("a red circle", **draw))


def test_flux_gguf_without_folder(first_device: gpucore.Device, flux: tuple[Path, Any]) -> None:
    """city96's Q8_0 GGUF with ae / clip_l / t5xxl files: the transformer stays quantized and
    the latents stay near the float file's (8-bit steps in every matrix)."""
    from safetensors.numpy import load_file

    from diffusion.loaders.formats.gguf_write import write_gguf
    from diffusion.pipelines.load import load_pipeline
    from gpustd.quant import QuantizedTensor

    root, _ = flux
    modules = [root / "ae.safetensors", root / "clip_l.safetensors",
               root / "t5xxl_fp16.safetensors"]
    float_file = FluxPipeline.from_pretrained(root / "flux1-dev.safetensors",
                                              text_encoder_files=modules, device=first_device)
    gguf = root / "flux1-dev-Q8_0.gguf"  # the float file's tensors, quantized
    write_gguf(gguf, load_file(str(root / "flux1-dev.safetensors")).items(), "q8_0",
               architecture="flux")
    assert flow_model_family(gguf) == "flux-dev"
    model = load_pipeline(gguf, text_encoders=modules, device=first_device)
    assert model.name == "flux1-dev-Q8_0"  # Forge's "Model:", without the extension
    ours = model.pipe
    assert isinstance(ours.transformer.transformer_blocks[0].attn.to_k.weight, QuantizedTensor)
    assert not isinstance(float_file.transformer.transformer_blocks[0].attn.to_k.weight,
                          QuantizedTensor)
    got, expected = _draw(ours), _draw(float_file)
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 0.05
    assert not np.array_equal(got, expected)


def test_flux_file_with_gguf_t5(first_device: gpucore.Device, flux: tuple[Path, Any]) -> None:
    """BFL's transformer with ae, clip_l and city96's T5 GGUF (a single file's modules path):
    the T5 config read from the GGUF's shapes, its matrices quantized, its states
    transformers' on the weights the GGUF holds."""
    from t5_files import write_t5_gguf

    from gpustd.nn.quantized import quantized_weights

    root, _ = flux
    t5 = root / "t5-v1_1-xxl-encoder-Q8_0.gguf"
    held = write_t5_gguf(_t5(), t5, "q8_0")
    ours = FluxPipeline.from_pretrained(root / "flux1-dev.safetensors", device=first_device,
                                        text_encoder_files=[root / "ae.safetensors",
                                                            root / "clip_l.safetensors", t5])
    assert ours.modules == ["ae", "clip_l", "t5-v1_1-xxl-encoder-Q8_0"]
    assert quantized_weights(ours.text_encoder_2)
    reference = transformers.T5EncoderModel(transformers.T5Config(**T5_FILE)).eval()
    state = {k: torch.from_numpy(v) for k, v in held.items()}
    reference.load_state_dict({**state, "encoder.embed_tokens.weight": state["shared.weight"]})
    ids = np.random.default_rng(4).integers(0, T5_FILE["vocab_size"], (1, 13))
    with torch.no_grad():
        expected = reference(torch.from_numpy(ids)).last_hidden_state.numpy()
    assert_close(ours.text_encoder_2(ids).numpy(), expected, tol=1e-3)


@pytest.mark.nodevice
def test_flux_scaled_fp8_file(flux: tuple[Path, Any]) -> None:
    """ComfyUI's flux_dev_fp8_scaled layout (float8 matrices, a float32 scale_weight each,
    the scaled_fp8 marker, under model.diffusion_model.): the same diffusers tensors, fused
    q/k/v split and adaLN halves swapped included, as a file of the values it stands for."""
    from safetensors.torch import load_file
    from t5_files import scaled_fp8

    from diffusion.loaders.flow.flux_file import load_flux_file

    root, _ = flux
    stored, held = scaled_fp8(load_file(str(root / "flux1-dev.safetensors")),
                              "model.diffusion_model.")
    save_file(stored, str(root / "flux1-dev-fp8-scaled.safetensors"))
    save_file({k: torch.from_numpy(v) for k, v in held.items()}, str(root / "values.safetensors"))
    assert flow_model_family(root / "flux1-dev-fp8-scaled.safetensors") == "flux-dev"
    got = load_flux_file(root / "flux1-dev-fp8-scaled.safetensors")
    expected = load_flux_file(root / "values.safetensors")
    assert got.config == expected.config and sorted(got) == sorted(expected)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def test_server_runs_a_flux_file_with_modules(first_device: gpucore.Device,
                                              flux: tuple[Path, Any], tmp_path: Path) -> None:
    """`serve --model flux1-dev.safetensors --text-encoder ...` (the CLI's --model and
    --text-encoder take the same load_pipeline path): the server's models load with the
    module files, and a txt2img request gets Forge's Model and Module infotext."""
    pytest.importorskip("fastapi", reason="the server extra is not installed")
    from fastapi.testclient import TestClient
    from server_support import info

    from diffusion.server import create_app

    root, _ = flux
    modules = [root / f"{name}.safetensors" for name in ("ae", "clip_l", "t5xxl_fp16")]
    app = create_app(model=root / "flux1-dev.safetensors", outputs=tmp_path, max_size=64,
                     text_encoders=modules, dtype="float32")
    with TestClient(app) as client:
        # a Forge client naming the modules (by file name, in any order) the server runs with
        response = client.post("/sdapi/v1/txt2img", json={
            "prompt": "a fox", "width": 16, "height": 16, "steps": 1, "seed": 3,
            "sampler_name": "Euler", "distilled_cfg_scale": 3.5, "override_settings": {
                "forge_additional_modules": [m.name for m in reversed(modules)]}})
        assert response.status_code == 200, response.text
        text = info(response)["infotexts"][0]
    assert [Path(m).name for m in app.state.options["forge_additional_modules"]] == [
        m.name for m in modules]
    assert "Model: flux1-dev" in text and text.endswith(
        "Module 1: ae, Module 2: clip_l, Module 3: t5xxl_fp16")


def _kontext_draw(pipe: Any, image: Any) -> np.ndarray:
    return pipe("make it night", image=image, auto_resize=False, height=32, width=32,
                num_inference_steps=2, guidance_scale=2.5, seed=3, max_sequence_length=16,
                output_type="latent")


def _reference_picture(seed: int) -> Any:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.mark.parametrize("named", ["file name", "metadata"])
def test_kontext_file_loads_as_kontext(first_device: gpucore.Device, flux: tuple[Path, Any],
                                       tmp_path: Path, named: str) -> None:
    """BFL's flux1-kontext-dev.safetensors holds FLUX.1 dev's keys: its name (or the
    metadata's modelspec.title) makes it Kontext, drawing the latents of the same parts saved
    by diffusers as a FluxKontextPipeline folder, the reference picture steering them; the
    same tensors named flux1-dev stay FLUX.1 dev."""
    from safetensors.numpy import load_file
    from safetensors.numpy import save_file as save_numpy

    from diffusion.pipelines.families import family_of
    from diffusion.pipelines.flow.kontext_model import KontextModel
    from diffusion.pipelines.load import load_pipeline

    root, folder = flux
    kontext_folder = tmp_path / "FLUX.1-Kontext-dev"
    diffusers.FluxKontextPipeline.from_pretrained(folder).save_pretrained(kontext_folder)
    reference = load_pipeline(kontext_folder, device=first_device)
    reference.pipe.tokenizer, reference.pipe.tokenizer_2 = CLIPTokenizer(), T5Tokenizer()
    tensors = load_file(str(root / "flux1-dev.safetensors"))
    if named == "file name":
        file = tmp_path / "flux1-kontext-dev.safetensors"
        save_numpy(tensors, str(file))
    else:
        file = tmp_path / "my-edit-model.safetensors"
        save_numpy(tensors, str(file), metadata={"modelspec.title": "FLUX.1 Kontext [dev]"})
    modules = [root / "ae.safetensors", root / "clip_l.safetensors",
               root / "t5xxl_fp16.safetensors"]
    assert family_of(file)[1] == "flux-kontext"
    assert family_of(root / "flux1-dev.safetensors")[1] == "flux-dev"
    model = load_pipeline(file, text_encoders=modules, device=first_device)
    assert isinstance(model, KontextModel) and model.family == "flux-kontext"
    assert model.name == file.name.removesuffix(".safetensors")
    dev = load_pipeline(root / "flux1-dev.safetensors", text_encoders=modules,
                        device=first_device)
    assert not isinstance(dev, KontextModel) and dev.family == "flux-dev"
    picture = _reference_picture(1)
    ours = _kontext_draw(model.pipe, picture)
    np.testing.assert_array_equal(ours, _kontext_draw(reference.pipe, picture))
    # the reference picture matters: another one, or none (FLUX.1 dev's draw), differs
    other = _kontext_draw(model.pipe, _reference_picture(2))
    plain = _kontext_draw(model.pipe, None)
    assert np.abs(ours - other).mean() > 0.01 * np.abs(ours).mean()
    assert np.abs(ours - plain).mean() > 0.01 * np.abs(ours).mean()


def test_kontext_gguf_loads_as_kontext(first_device: gpucore.Device,
                                       flux: tuple[Path, Any]) -> None:
    """city96's flux1-kontext-dev-Q8_0.gguf: Kontext by its name, the transformer quantized,
    the latents near the float file's; a GGUF of the same tensors named flux1-dev stays
    FLUX.1 dev."""
    from safetensors.numpy import load_file

    from diffusion.loaders.formats.gguf_write import write_gguf
    from diffusion.pipelines.families import family_of
    from diffusion.pipelines.flow.kontext import KontextPipeline
    from diffusion.pipelines.flow.kontext_model import KontextModel
    from diffusion.pipelines.load import load_pipeline
    from gpustd.quant import QuantizedTensor

    root, _ = flux
    modules = [root / "ae.safetensors", root / "clip_l.safetensors",
               root / "t5xxl_fp16.safetensors"]
    tensors = load_file(str(root / "flux1-dev.safetensors"))
    gguf = root / "flux1-kontext-dev-Q8_0.gguf"
    write_gguf(gguf, tensors.items(), "q8_0", architecture="flux")
    assert family_of(gguf)[1] == "flux-kontext"
    plain = root / "flux1-dev-Q8_0.gguf"
    if not plain.exists():
        write_gguf(plain, tensors.items(), "q8_0", architecture="flux")
    assert family_of(plain)[1] == "flux-dev"
    model = load_pipeline(gguf, text_encoders=modules, device=first_device)
    assert isinstance(model, KontextModel) and model.name == "flux1-kontext-dev-Q8_0"
    assert isinstance(model.pipe.transformer.transformer_blocks[0].attn.to_k.weight,
                      QuantizedTensor)
    float_file = KontextPipeline.from_pretrained(root / "flux1-dev.safetensors",
                                                 text_encoder_files=modules,
                                                 device=first_device)
    picture = _reference_picture(1)
    got, expected = _kontext_draw(model.pipe, picture), _kontext_draw(float_file, picture)
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 0.05
    assert not np.array_equal(got, expected)

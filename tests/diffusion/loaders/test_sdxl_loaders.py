"""diffusion.loaders on SDXL-family models: diffusers folders (base, refiner, fp16 variant,
Turbo) and single-file SGM checkpoints, every tensor against the torch models they were saved
from, single file == folder, full-size configs derived like diffusers', and the error paths."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import sdxl_tiny
from diffusers.loaders import single_file_utils as sfu
from ldm_files import diffusers, safetensors_torch, torch, transformers, write_sparse
from sd_tiny import state_dict

from diffusion.loaders import ComponentWeights, WeightsError, load_pipeline_weights

pytestmark = pytest.mark.nodevice  # host logic: `pytest -m nodevice`

COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return sdxl_tiny.tiny_paths(tmp_path_factory)


def _expected(pipe, name: str, dtype=None) -> dict[str, np.ndarray]:
    model = getattr(pipe, name)
    out = state_dict(model, strip="text_model." if name.startswith("text") else "")
    return {k: v.astype(dtype) if dtype else v for k, v in out.items()}


def _assert_equal(weights: ComponentWeights, expected: dict[str, np.ndarray]) -> None:
    assert set(weights) == set(expected), set(weights) ^ set(expected)
    for key, want in expected.items():
        got = weights[key]
        assert got.dtype == want.dtype and got.shape == weights.shape(key), key
        np.testing.assert_array_equal(got, want, err_msg=key)


def test_layout_matches_diffusers_converters(paths):
    """diffusers' own single-file converters read the test's SGM layout back to the models."""
    for kind in ("base", "refiner"):
        pipe = paths.pipes[kind]
        ckpt = sdxl_tiny.ldm_state_dict(pipe)
        unet = pipe.unet.state_dict()
        back = sfu.convert_ldm_unet_checkpoint(ckpt, dict(pipe.unet.config))
        assert back.keys() == unet.keys() and all(torch.equal(back[k], unet[k]) for k in back)
        prefix = f"conditioner.embedders.{1 if kind == 'base' else 0}.model."
        back = sfu.convert_open_clip_checkpoint(pipe.text_encoder_2, ckpt, prefix=prefix)
        text = {k: v for k, v in pipe.text_encoder_2.state_dict().items()
                if "position_ids" not in k}
        assert back.keys() == text.keys() and all(torch.equal(back[k], text[k]) for k in back)


@pytest.mark.parametrize("kind", ["base", "refiner"])
def test_single_file_like_diffusers_from_single_file(paths, kind):
    """diffusers' own single-file loading (with the folder's configs) reads the same tensors.
    Not the base's text_encoder_2: both tiny encoders are 32 wide, and diffusers picks the
    encoder to convert by that width, so it fills text_encoder_2 from CLIP-L (real SDXL's
    768 vs 1280 never meet this)."""
    cls = (diffusers.StableDiffusionXLPipeline if kind == "base"
           else diffusers.StableDiffusionXLImg2ImgPipeline)
    attr = kind.replace("-", "_")
    pipe = cls.from_single_file(str(getattr(paths, attr + "_file")),
                                config=str(getattr(paths, attr)), local_files_only=True)
    w = load_pipeline_weights(getattr(paths, attr + "_file"))
    names = ["unet", "vae", "text_encoder"] if kind == "base" else ["unet", "vae",
                                                                     "text_encoder_2"]
    for name in names:
        _assert_equal(getattr(w, name), _expected(pipe, name))


@pytest.mark.parametrize("kind", ["base", "refiner", "sdxl-turbo", "sd-turbo"])
def test_folder_loads_every_tensor(paths, kind):
    folder, pipe = getattr(paths, kind.replace("-", "_")), paths.pipes[kind]
    w = load_pipeline_weights(folder)
    for name in COMPONENTS:
        if getattr(pipe, name, None) is None:
            assert getattr(w, name) is None, name
            continue
        _assert_equal(getattr(w, name), _expected(pipe, name))
        config = json.loads((folder / name / "config.json").read_text())
        assert getattr(w, name).config == config
    family = {"base": "sdxl", "refiner": "sdxl-refiner", "sdxl-turbo": "sdxl", "sd-turbo": "sd2"}
    assert (w.info.family, w.info.turbo, w.info.source) == (family[kind], "turbo" in kind,
                                                            "diffusers")
    assert w.scheduler_config["_class_name"] == type(pipe.scheduler).__name__
    assert w.tokenizer_2_dir == (None if kind == "sd-turbo" else folder / "tokenizer_2")
    assert w.tokenizer_dir == (None if kind == "refiner" else folder / "tokenizer")
    if kind == "refiner":
        assert w.pipeline_config == {"force_zeros_for_empty_prompt": False,
                                     "requires_aesthetics_score": True}
    if w.text_encoder_2 is not None:
        assert "text_projection.weight" in w.text_encoder_2


def test_fp16_variant(paths):
    """The fp16 download: *.fp16.safetensors only, picked with or without variant='fp16'."""
    pipe = paths.pipes["base"]
    for variant in ("fp16", None):
        w = load_pipeline_weights(paths.base_fp16, variant=variant)
        for name in COMPONENTS:
            _assert_equal(getattr(w, name), _expected(pipe, name, np.float16))
    w = load_pipeline_weights(paths.base_fp16, dtype="float32")
    assert w.text_encoder_2["text_projection.weight"].dtype == np.float32


@pytest.mark.parametrize("kind", ["base", "refiner", "sdxl-turbo", "sd-turbo"])
def test_single_file_equals_folder(paths, kind):
    attr = kind.replace("-", "_")
    folder, file = load_pipeline_weights(getattr(paths, attr)), getattr(paths, attr + "_file")
    w = load_pipeline_weights(file)
    for name in COMPONENTS:
        if getattr(folder, name) is None:
            assert getattr(w, name) is None, name
            continue
        reference = getattr(folder, name)
        _assert_equal(getattr(w, name), {k: reference[k] for k in reference})
    assert (w.info.family, w.info.turbo, w.info.prediction_type) == (
        folder.info.family, folder.info.turbo, folder.info.prediction_type)
    assert w.tokenizer_dir is None and w.tokenizer_2_dir is None
    want = {k: folder.scheduler_config[k] for k in ("_class_name", "timestep_spacing",
                                                    "beta_start", "beta_end", "steps_offset")}
    assert {k: w.scheduler_config[k] for k in want} == want
    if kind == "sd-turbo":
        return
    unet = w.unet.config
    assert (unet["addition_embed_type"], unet["addition_time_embed_dim"]) == ("text_time", 8)
    assert unet["projection_class_embeddings_input_dim"] == folder.unet.config[
        "projection_class_embeddings_input_dim"]
    assert unet["cross_attention_dim"] == folder.unet.config["cross_attention_dim"]
    assert (w.vae.config["scaling_factor"], w.vae.config["force_upcast"]) == (0.13025, True)
    assert w.text_encoder_2.config["architectures"] == ["CLIPTextModelWithProjection"]
    assert w.text_encoder_2.config["projection_dim"] == 32
    assert w.pipeline_config == folder.pipeline_config
    # with the folder's configs (heads, groups), the file describes exactly the folder's model
    w = load_pipeline_weights(file, config=getattr(paths, attr))
    for name in COMPONENTS:
        if getattr(folder, name) is not None:
            assert getattr(w, name).config == getattr(folder, name).config
    assert (w.scheduler_config, w.tokenizer_2_dir) == (folder.scheduler_config,
                                                       folder.tokenizer_2_dir)


def test_single_file_float16_and_dtype(paths, tmp_path):
    path = sdxl_tiny.save_single_file(paths.pipes["refiner"], tmp_path / "r16.safetensors",
                                      dtype=torch.float16)
    w = load_pipeline_weights(path)
    _assert_equal(w.text_encoder_2, _expected(paths.pipes["refiner"], "text_encoder_2",
                                              np.float16))
    assert load_pipeline_weights(path, dtype="float32").unet["conv_in.weight"].dtype == np.float32


# -- full-size layouts (sparse files: real shapes, no data) -------------------------------------

SDXL_FULL = {
    "sdxl": dict(block_out_channels=[320, 640, 1280], transformer_layers_per_block=[1, 2, 10],
                 attention_head_dim=[5, 10, 20], cross_attention_dim=2048,
                 projection_class_embeddings_input_dim=2816,
                 down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                 up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]),
    "sdxl-refiner": dict(block_out_channels=[384, 768, 1536, 1536], transformer_layers_per_block=4,
                         attention_head_dim=[6, 12, 24, 24], cross_attention_dim=1280,
                         projection_class_embeddings_input_dim=2560,
                         down_block_types=["DownBlock2D", "CrossAttnDownBlock2D",
                                           "CrossAttnDownBlock2D", "DownBlock2D"],
                         up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                         "UpBlock2D"]),
}
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
              num_attention_heads=12, projection_dim=768, bos_token_id=0, eos_token_id=2)
BIG_G = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
             num_attention_heads=20, projection_dim=1280, hidden_act="gelu", bos_token_id=0,
             eos_token_id=2)


@pytest.mark.parametrize("family", ["sdxl", "sdxl-refiner"])
def test_full_size_configs_are_sdxl(tmp_path, family):
    """The configs inferred from real SDXL shapes are stabilityai's (heads, depths, time ids),
    and the models they describe have exactly the file's tensors."""
    spec = SDXL_FULL[family]
    unet_config = dict(spec, use_linear_projection=True, addition_embed_type="text_time",
                       addition_time_embed_dim=256, sample_size=128)
    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel(**unet_config)
        vae = diffusers.AutoencoderKL(block_out_channels=[128, 256, 512, 512], layers_per_block=2,
                                      down_block_types=["DownEncoderBlock2D"] * 4,
                                      up_block_types=["UpDecoderBlock2D"] * 4)
        big_g = transformers.CLIPTextModelWithProjection(transformers.CLIPTextConfig(**BIG_G))
        clip_l = (transformers.CLIPTextModel(transformers.CLIPTextConfig(**CLIP_L))
                  if family == "sdxl" else None)
        pipe = type("Pipe", (), dict(unet=unet, vae=vae, text_encoder=clip_l,
                                     text_encoder_2=big_g))()
        ckpt = sdxl_tiny.ldm_state_dict(pipe)
    path = tmp_path / "full.safetensors"
    write_sparse(path, ckpt)
    w = load_pipeline_weights(path)
    assert w.info.family == family
    got = w.unet.config
    assert {key: got[key] for key in unet_config} == unet_config
    assert (w.vae.config["scaling_factor"], w.vae.config["sample_size"]) == (0.13025, 1024)
    models = {"unet": unet, "vae": vae, "text_encoder": clip_l, "text_encoder_2": big_g}
    for name, model in models.items():
        if model is None:
            assert getattr(w, name) is None
            continue
        weights = getattr(w, name)
        want = {k.removeprefix("text_model."): tuple(v.shape)
                for k, v in model.state_dict().items() if "position_ids" not in k}
        assert {k: weights.shape(k) for k in weights} == want, name
    for name, config in (("text_encoder", CLIP_L), ("text_encoder_2", BIG_G)):
        if getattr(w, name) is not None:
            got = getattr(w, name).config
            assert {k: got[k] for k in config} == config, name
    with torch.device("meta"):  # the derived configs build diffusers' models
        again = diffusers.UNet2DConditionModel(**{k: v for k, v in w.unet.config.items()
                                                  if not k.startswith("_")})
    assert {k: tuple(v.shape) for k, v in again.state_dict().items()} == {
        k: w.unet.shape(k) for k in w.unet}


# -- errors -------------------------------------------------------------------------------------

def _write(path, ckpt):
    safetensors_torch.save_file({k: v.detach().contiguous() for k, v in ckpt.items()}, str(path))
    return path


def _raises(path, *patterns, **kwargs) -> str:
    with pytest.raises(WeightsError) as info:
        load_pipeline_weights(path, **kwargs)
    message = str(info.value)
    for pattern in (str(path.name), *patterns):
        assert pattern in message, (pattern, message)
    return message


def test_single_file_errors(paths, tmp_path):
    base = sdxl_tiny.ldm_state_dict(paths.pipes["base"])
    refiner = sdxl_tiny.ldm_state_dict(paths.pipes["refiner"])
    data = paths.base_file.read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(data[: len(data) * 2 // 3])
    _raises(tmp_path / "truncated.safetensors", "re-download")
    key = "conditioner.embedders.1.model.transformer.resblocks.2.attn.in_proj_weight"
    _raises(_write(tmp_path / "missing.safetensors", {k: v for k, v in base.items() if k != key}),
            "(keys conditioner.embedders.1.model.*): text_encoder_2 tensor "
            "'encoder.layers.2.self_attn.q_proj.weight' is missing")
    label = "model.diffusion_model.label_emb.0.0.weight"
    _raises(_write(tmp_path / "nolabel.safetensors", {k: v for k, v in base.items()
                                                      if k != label}), label)
    projection = "conditioner.embedders.1.model.text_projection"
    _raises(_write(tmp_path / "noproj.safetensors", {k: v for k, v in base.items()
                                                     if k != projection}), "text_projection")
    mixed = {**base, **{k: v for k, v in refiner.items() if k.startswith("conditioner.")}}
    _raises(_write(tmp_path / "mixed.safetensors", mixed), "mixes a refiner's text encoder")
    no_big_g = {k: v for k, v in base.items() if not k.startswith("conditioner.embedders.1.")}
    _raises(_write(tmp_path / "half.safetensors", no_big_g), "conditioner.embedders.1.model.*")
    swapped = {**{k: v for k, v in base.items() if not k.startswith("model.")},
               **{k: v for k, v in refiner.items() if k.startswith("model.")}}
    _raises(_write(tmp_path / "swapped.safetensors", swapped), "does not fit the SDXL base",
            "32-wide context (the encoders give 64)")
    no_vae = {k: v for k, v in base.items() if not k.startswith("first_stage_model.")}
    _raises(_write(tmp_path / "novae.safetensors", no_vae), "first_stage_model.decoder.conv_in")
    _raises(paths.base_file, "config=", config=paths.base_file.parent / "nothing")
    _raises(paths.base_file, "text_encoder", config=paths.refiner)


def test_folder_errors(paths, tmp_path):
    folder = shutil.copytree(paths.refiner, tmp_path / "refiner")
    (folder / "text_encoder_2" / "model.safetensors").unlink()
    _raises(folder, f"{folder / 'text_encoder_2'}: no weights")
    index = json.loads((paths.base / "model_index.json").read_text())
    folder = shutil.copytree(paths.base, tmp_path / "base")
    (folder / "model_index.json").write_text(json.dumps({**index, "text_encoder_2": [None, None]}))
    _raises(folder, "needs the 'text_encoder_2' component")
    (folder / "model_index.json").write_text(json.dumps(
        {**index, "text_encoder": [None, None], "text_encoder_2": [None, None]}))
    _raises(folder, "no 'text_encoder' component")
    (folder / "model_index.json").write_text(json.dumps(index))
    config = json.loads((folder / "text_encoder_2" / "config.json").read_text())
    (folder / "text_encoder_2" / "config.json").write_text(json.dumps(
        {**config, "num_hidden_layers": 6}))
    _raises(folder, str(folder / "text_encoder_2" / "model.safetensors"), "encoder.layers.5.")


def test_turbo_is_named_not_inferred_from_trailing_spacing(paths, tmp_path):
    """The bundled zero-SNR model schedules with trailing spacing and is no Turbo model; a Turbo
    folder under another name is SD 2.1 / SDXL like any other."""
    from diffusion.pipelines.load import DEFAULT_MODEL

    if (DEFAULT_MODEL / "model_index.json").is_file():
        w = load_pipeline_weights(DEFAULT_MODEL)
        assert w.scheduler_config["timestep_spacing"] == "trailing" and not w.info.turbo
    renamed = shutil.copytree(paths.sdxl_turbo, tmp_path / "fast-xl")
    assert not load_pipeline_weights(renamed).info.turbo
    snapshot = tmp_path / "models--stabilityai--sdxl-turbo" / "snapshots" / "0123abc"
    shutil.copytree(paths.sdxl_turbo, snapshot)
    assert load_pipeline_weights(snapshot).info.turbo


def test_single_file_is_lazy(paths, monkeypatch):
    """Opening an SDXL file reads headers only; each tensor is read when indexed, a q/k/v slice
    of OpenCLIP's fused in_proj as only its rows."""
    from diffusion.loaders import SafetensorsFile

    reads = []
    real_read = SafetensorsFile.read

    def counted(self, key, *, rows=None):
        reads.append((key, rows))
        return real_read(self, key, rows=rows)

    monkeypatch.setattr(SafetensorsFile, "read", counted)
    w = load_pipeline_weights(paths.base_file)
    assert reads == []
    w.text_encoder_2["encoder.layers.1.self_attn.k_proj.weight"]
    w.text_encoder_2["text_projection.weight"]
    prefix = "conditioner.embedders.1.model."
    assert reads == [(prefix + "transformer.resblocks.1.attn.in_proj_weight", (32, 64)),
                     (prefix + "text_projection", None)]

"""Tiny random SDXL-family models built in-process with diffusers/transformers (torch CPU,
seeded, nothing downloaded), saved as diffusers folders and as single-file SGM/LDM checkpoints.

API (every SDXL test imports these):

    pipe = sdxl_pipeline("base")        # diffusers StableDiffusionXLPipeline (torch, float32)
    pipe = sdxl_pipeline("refiner")     # StableDiffusionXLImg2ImgPipeline, text_encoder_2 only
    pipe = sdxl_pipeline("sdxl-turbo")  # the base architecture, EulerAncestral, trailing spacing
    pipe = sdxl_pipeline("sd-turbo")    # StableDiffusionPipeline, SD 2.1 architecture, trailing
    save_folder(pipe, root, variant="fp16")   # save_pretrained (fp16 variant: half weights)
    save_single_file(pipe, path)        # one .safetensors in the SGM (or SD2 LDM) key layout
    ldm_state_dict(pipe)                # that layout as {key: torch tensor}, nothing written

    paths = tiny_paths(tmp_path_factory)   # built and written once per test session:
    paths.base, paths.base_fp16, paths.refiner, paths.sdxl_turbo, paths.sd_turbo   (folders)
    paths.base_file, paths.refiner_file, paths.sdxl_turbo_file, paths.sd_turbo_file
    paths.pipes["base"] ...             # the in-memory diffusers pipelines those were saved from

Shapes are diffusers' own SDXL fast-test components (tests/pipelines/stable_diffusion_xl):
UNet (32, 64) channels, DownBlock2D + CrossAttnDownBlock2D, heads (2, 4), transformer depths
(1, 2), text_time embedding with 8-wide time ids (6 * 8 + 32 = 80 in; refiner 5 * 8 + 32 = 72),
norm_num_groups 1; both text encoders hidden 32, 5 layers, 4 heads, gelu, projection 32.
One deliberate difference: the vocabulary is CLIP's real 49408 tokens (diffusers' test uses a
1000-token hub tokenizer), so the bundled tokenizer a single-file checkpoint falls back to
yields ids the embeddings have. Configs keep the real SDXL text encoders' legacy
`eos_token_id=2`, with which transformers pools at argmax(ids).

The single-file heads and GroupNorm counts are not in the weights: a loader that derives the
config from the shapes (SDXL's 64-wide heads, 32 groups) describes a different tiny model than
the folder; `load_pipeline_weights(file, config=folder)` takes the folder's configs (diffusers:
`from_single_file(file, config=folder)`) to compare outputs. diffusers' own from_single_file
misloads the tiny base's text_encoder_2 (it picks the encoder by width, and both are 32 wide):
compare against the folder pipeline, whose tensors the single file is tested to equal.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import sd_tiny

os.environ.setdefault("HF_HUB_OFFLINE", "1")

KINDS = ("base", "refiner", "sdxl-turbo", "sd-turbo")

UNET_SDXL_TINY: dict[str, Any] = dict(
    block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4,
    out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
    transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,
    cross_attention_dim=64, norm_num_groups=1,
)
UNET_REFINER_TINY: dict[str, Any] = {**UNET_SDXL_TINY, "projection_class_embeddings_input_dim": 72,
                                     "cross_attention_dim": 32}
# SD-Turbo: SD 2.1's UNet (linear projections, per-level heads) at sd_tiny's size
UNET_SD_TURBO_TINY: dict[str, Any] = {**sd_tiny.UNET_TINY, "sample_size": 32,
                                      "use_linear_projection": True}
VAE_SDXL_TINY: dict[str, Any] = {**sd_tiny.VAE_TINY, "sample_size": 128,
                                 "scaling_factor": 0.13025, "force_upcast": True}
CLIP_SDXL_TINY: dict[str, Any] = dict(
    bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_size=32, intermediate_size=37,
    layer_norm_eps=1e-5, num_attention_heads=4, num_hidden_layers=5, vocab_size=49408,
    max_position_embeddings=77, hidden_act="gelu", projection_dim=32,
)
# diffusers' SDXL scheduler_config.json (base, refiner); Turbo ones: trailing spacing
_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                  steps_offset=1, timestep_spacing="leading", interpolation_type="linear",
                  prediction_type="epsilon", use_karras_sigmas=False)
# stabilityai/sd-turbo ships an EulerDiscreteScheduler with trailing spacing and (as far as this
# author recalls; not checked offline) epsilon prediction
SD_TURBO_PREDICTION = "epsilon"


def _scheduler(kind: str) -> Any:
    import diffusers

    if kind == "sdxl-turbo":
        # its config has no interpolation_type / use_karras_sigmas (it interpolates linearly)
        config = {k: v for k, v in _SCHEDULER.items()
                  if k not in ("interpolation_type", "use_karras_sigmas")}
        return diffusers.EulerAncestralDiscreteScheduler(**{**config,
                                                            "timestep_spacing": "trailing"})
    if kind == "sd-turbo":
        return diffusers.EulerDiscreteScheduler(**{**_SCHEDULER, "timestep_spacing": "trailing",
                                                   "prediction_type": SD_TURBO_PREDICTION})
    return diffusers.EulerDiscreteScheduler(**_SCHEDULER)


def _tokenizer(folder: Path, pad_token: str) -> Any:
    """transformers' CLIPTokenizer on the bundled CLIP vocabulary (sd_tiny's files), with SDXL's
    pad token: "<|endoftext|>" for the CLIP-L tokenizer, "!" for the OpenCLIP one."""
    import transformers

    sd_tiny.write_tokenizer(folder)
    return transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                                      pad_token=pad_token, model_max_length=77)


def _text_encoder(seed: int, projection: bool) -> Any:
    import transformers

    config = transformers.CLIPTextConfig(**CLIP_SDXL_TINY)
    cls = transformers.CLIPTextModelWithProjection if projection else transformers.CLIPTextModel
    return sd_tiny.randomized(cls(config), seed)


def sdxl_pipeline(kind: str = "base", seed: int = 0, *, scratch: Path | None = None) -> Any:
    """A diffusers pipeline of tiny random models: kind in KINDS (see the module docstring).
    `scratch` is a folder for the tokenizer files transformers is built from (a temp dir when
    None). Every parameter is redrawn (sd_tiny.randomized), seeded by `seed`."""
    import tempfile

    import diffusers

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    scratch = Path(scratch or tempfile.mkdtemp(prefix="sdxl-tiny-"))
    vae_config = VAE_SDXL_TINY if kind != "sd-turbo" else sd_tiny.VAE_TINY
    vae = sd_tiny.randomized(diffusers.AutoencoderKL(**vae_config), seed + 2)
    if kind == "sd-turbo":
        return diffusers.StableDiffusionPipeline(
            vae=vae, unet=sd_tiny.randomized(
                diffusers.UNet2DConditionModel(**UNET_SD_TURBO_TINY), seed + 1),
            text_encoder=_text_encoder(seed + 3, projection=False),
            tokenizer=_tokenizer(scratch / "tok2", "!"), scheduler=_scheduler(kind),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    unet_config = UNET_REFINER_TINY if kind == "refiner" else UNET_SDXL_TINY
    unet = sd_tiny.randomized(diffusers.UNet2DConditionModel(**unet_config), seed + 1)
    text_encoder_2 = _text_encoder(seed + 4, projection=True)
    tokenizer_2 = _tokenizer(scratch / "tok2", "!")
    if kind == "refiner":
        return diffusers.StableDiffusionXLImg2ImgPipeline(
            vae=vae, text_encoder=None, text_encoder_2=text_encoder_2, tokenizer=None,
            tokenizer_2=tokenizer_2, unet=unet, scheduler=_scheduler(kind),
            requires_aesthetics_score=True, force_zeros_for_empty_prompt=False)
    return diffusers.StableDiffusionXLPipeline(
        vae=vae, text_encoder=_text_encoder(seed + 3, projection=False),
        text_encoder_2=text_encoder_2, tokenizer=_tokenizer(scratch / "tok1", "<|endoftext|>"),
        tokenizer_2=tokenizer_2, unet=unet, scheduler=_scheduler(kind))


def save_folder(pipe: Any, root: Path, *, variant: str | None = None) -> Path:
    """`pipe.save_pretrained(root)` (safetensors); variant="fp16" saves float16 weights as the
    `*.fp16.safetensors` files of an fp16 download (pipe itself is left in float32)."""
    import copy

    import torch

    if variant == "fp16":
        pipe = copy.deepcopy(pipe)
        pipe.to(torch.float16)
    pipe.save_pretrained(root, safe_serialization=True, variant=variant)
    return Path(root)


# -- diffusers -> SGM / LDM single-file layout ---------------------------------------------------
# The mapping follows diffusers' loaders/single_file_utils.py read backwards (LDM -> diffusers
# there): label_emb.0.{0,2} <- add_embedding.linear_{1,2}; OpenCLIP's fused in_proj = rows q, k, v;
# text_projection stored as (width, proj), the transpose of transformers' Linear weight.

_OPEN_CLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc",
                    "mlp.fc2": "mlp.c_proj", "self_attn.out_proj": "attn.out_proj"}


def _open_clip(sd: dict[str, Any], prefix: str, *, projection: Any = None) -> dict[str, Any]:
    """transformers CLIP text weights (no `text_model.` prefix) -> OpenCLIP text tower keys."""
    out = {prefix + "token_embedding.weight": sd["embeddings.token_embedding.weight"],
           prefix + "positional_embedding": sd["embeddings.position_embedding.weight"],
           prefix + "ln_final.weight": sd["final_layer_norm.weight"],
           prefix + "ln_final.bias": sd["final_layer_norm.bias"]}
    import torch

    for name in sd:
        if not (m := re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", name)):
            continue
        head = f"{prefix}transformer.resblocks.{m[1]}."
        if m[2] == "self_attn.q_proj":
            fused = [sd[name.replace("q_proj", p)] for p in ("q_proj", "k_proj", "v_proj")]
            out[f"{head}attn.in_proj_{m[3]}"] = torch.cat(fused)
        elif m[2] in _OPEN_CLIP_LAYER:
            out[f"{head}{_OPEN_CLIP_LAYER[m[2]]}.{m[3]}"] = sd[name]
    if projection is not None:
        out[prefix + "text_projection"] = projection.T
    return out


def _text_sd(model: Any) -> dict[str, Any]:
    return {k.removeprefix("text_model."): v for k, v in model.state_dict().items()
            if not k.endswith("position_ids")}


def ldm_state_dict(pipe: Any) -> dict[str, Any]:
    """The single-file checkpoint of `pipe` as {key: torch.Tensor}: SGM keys for SDXL
    (conditioner.embedders.*), SD 2's LDM keys (cond_stage_model.model.*) for SD-Turbo."""
    import ldm_files
    import torch

    unet_sd = dict(pipe.unet.state_dict())
    label = {}
    for i in (0, 1):
        for param in ("weight", "bias"):
            if (key := f"add_embedding.linear_{i + 1}.{param}") in unet_sd:
                label[f"model.diffusion_model.label_emb.0.{2 * i}.{param}"] = unet_sd.pop(key)
    out = {**ldm_files.ldm_unet(unet_sd), **label, **ldm_files.ldm_vae(pipe.vae.state_dict())}
    if isinstance(pipe, _sd_pipeline_class()):  # SD-Turbo: SD 2's OpenCLIP layout
        text = _text_sd(pipe.text_encoder)
        out.update(ldm_files.ldm_open_clip(text))
        return out
    text2 = _text_sd(pipe.text_encoder_2)
    projection = pipe.text_encoder_2.text_projection.weight
    if pipe.text_encoder is None:  # refiner: the OpenCLIP encoder is embedders.0
        out.update(_open_clip(text2, "conditioner.embedders.0.model.", projection=projection))
        return out
    clip = "conditioner.embedders.0.transformer.text_model."
    out.update({clip + k: v for k, v in _text_sd(pipe.text_encoder).items()})
    out[clip + "embeddings.position_ids"] = torch.arange(77)[None]
    out.update(_open_clip(text2, "conditioner.embedders.1.model.", projection=projection))
    return out


def _sd_pipeline_class() -> type:
    import diffusers

    return diffusers.StableDiffusionPipeline


def save_single_file(pipe: Any, path: Path, *, dtype: Any = None,
                     metadata: dict[str, str] | None = None) -> Path:
    """Write `ldm_state_dict(pipe)` to `path` (.safetensors), floats cast to `dtype` if given."""
    import safetensors.torch

    tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v)
               .detach().contiguous() for k, v in ldm_state_dict(pipe).items()}
    safetensors.torch.save_file(tensors, str(path), metadata=metadata)
    return Path(path)


_CACHE: dict[str, SimpleNamespace] = {}


def tiny_paths(tmp_path_factory: Any) -> SimpleNamespace:
    """Every tiny model of KINDS saved once per test session (folders and single files; the base
    also as an fp16-variant folder); see the module docstring for the attributes."""
    if "paths" in _CACHE:
        return _CACHE["paths"]
    root = tmp_path_factory.mktemp("sdxl-tiny")
    pipes = {kind: sdxl_pipeline(kind, seed=10 * i, scratch=root / "scratch" / kind)
             for i, kind in enumerate(KINDS)}
    paths = SimpleNamespace(pipes=pipes, root=root)
    for kind, pipe in pipes.items():
        attr = kind.replace("-", "_")
        setattr(paths, attr, save_folder(pipe, root / kind))
        setattr(paths, attr + "_file", save_single_file(pipe, root / f"{kind}.safetensors"))
    paths.base_fp16 = save_folder(pipes["base"], root / "base-fp16", variant="fp16")
    _CACHE["paths"] = paths
    return paths


def model_index(folder: Path) -> dict[str, Any]:
    """The folder's model_index.json as a dict."""
    return json.loads((Path(folder) / "model_index.json").read_text(encoding="utf-8"))

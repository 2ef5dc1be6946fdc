"""bench.coldstart's and bench.pictures' weight files: random full-size models in the layouts
users download, written fast enough to make on the benchmark machine inside the run that times
them.

- `sd15.safetensors`: an SD 1.5 single file (LDM keys, float32: the 4 GB file users have);
- `sdxl.safetensors`: an SDXL base single file (SGM keys, float16: 6.9 GB);
- an SDXL base diffusers folder (float16, tokenizers of the bundled vocabulary; bench.pictures);
- `flux-dev/`: a FLUX.1 dev diffusers folder (bfloat16 as published: 23.8 GB transformer,
  9.5 GB T5-XXL; no tokenizer folders, so the bundled CLIP and T5 tokenizers are used, unless
  asked for: bench.pictures loads the folder with diffusers too).

Names and shapes come from diffusers' / transformers' modules built on torch's meta device (no
values drawn), the single files' keys from the tests' independent inverses of diffusers' LDM
conversion (tests/ldm_files.py, tests/sdxl_tiny.py). Values: one pool of normal(0, 0.02)
float32 values drawn once; each tensor is a run of it from an offset of its own (repeated where
the tensor is longer), a norm's scale 1 plus that; integer tensors (CLIP's position ids) count
up. Each file is streamed (header, then each tensor's bytes), no whole copy in memory.
`--quick` writes the same layouts at the tiny configs the bench modules use.
"""

from __future__ import annotations

import json
import math
import struct
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

POOL = 1 << 24  # values: 64 MiB of float32
_CODES = {"F32": (np.float32, 4), "F16": (np.float16, 2), "BF16": (None, 2), "I64": (np.int64, 8)}


class _Pool:
    def __init__(self, seed: int = 0, size: int = POOL) -> None:
        values = np.random.default_rng(seed).normal(0.0, 0.02, size).astype(np.float32)
        self.size = size
        self.f32 = values
        self.bytes = {"F32": values.view(np.uint8), "F16": values.astype(np.float16).view(np.uint8),
                      "BF16": (values.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)}
        self.rng = np.random.default_rng(seed + 1)

    def write(self, file: Any, code: str, count: int) -> None:
        """`count` values of dtype `code`: runs of the pool from a random offset."""
        raw, item = self.bytes[code], _CODES[code][1]
        start = int(self.rng.integers(0, self.size)) * item
        left = count * item
        while left:
            piece = raw[start:start + left]
            file.write(piece.data)
            left -= len(piece)
            start = 0

    def norm(self, code: str, count: int) -> bytes:
        start = int(self.rng.integers(0, self.size - count)) if count < self.size else 0
        values = 1.0 + self.f32[start:start + count]
        if code == "BF16":
            return (values.view(np.uint32) >> 16).astype(np.uint16).tobytes()
        return values.astype(_CODES[code][0]).tobytes()


def _is_norm(name: str, shape: tuple[int, ...]) -> bool:
    owner, _, leaf = name.rpartition(".")
    last = owner.rpartition(".")[2]
    return (len(shape) == 1 and leaf == "weight"
            and any(n in last for n in ("norm", "ln_", "ln", "layer_norm")))


def write_safetensors(path: Path, shapes: dict[str, tuple[str, tuple[int, ...]]],
                      pool: _Pool) -> int:
    """Stream a .safetensors file of {name: (dtype code, shape)}; returns its size in bytes."""
    header: dict[str, Any] = {}
    offset = 0
    for name, (code, shape) in shapes.items():
        size = math.prod(shape) * _CODES[code][1]
        header[name] = {"dtype": code, "shape": list(shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb", buffering=0) as file:
        file.write(struct.pack("<Q", len(raw)) + raw)
        for name, (code, shape) in shapes.items():
            count = math.prod(shape)
            if code == "I64":
                file.write(np.broadcast_to(np.arange(shape[-1], dtype=np.int64), shape).tobytes())
            elif _is_norm(name, shape):
                file.write(pool.norm(code, count))
            else:
                pool.write(file, code, count)
    return 8 + len(raw) + offset


def _described(state: dict[str, Any], code: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{name: (code, shape)} of a state dict of (meta) torch tensors: floats as `code`."""
    return {k: (code if v.is_floating_point() else "I64", tuple(v.shape)) for k, v in state.items()}


def _meta(build: Any) -> Any:
    import torch

    with torch.device("meta"):
        return build()


def _tests_helpers() -> Any:
    tests = str(Path(__file__).resolve().parent.parent / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    try:
        import pytest  # noqa: F401  (ldm_files imports its helpers through importorskip)
    except ImportError:  # a benchmark machine without pytest: import them plainly
        import importlib
        import types

        sys.modules["pytest"] = types.SimpleNamespace(  # type: ignore[assignment]
            importorskip=importlib.import_module)
    import ldm_files
    import sdxl_tiny

    return ldm_files, sdxl_tiny


def _clip(width: int, depth: int, heads: int, act: str, projection: int | None) -> Any:
    import transformers

    config = transformers.CLIPTextConfig(
        hidden_size=width, intermediate_size=4 * width, num_hidden_layers=depth,
        num_attention_heads=heads, max_position_embeddings=77, vocab_size=49408,
        hidden_act=act, projection_dim=projection or width)
    model = (transformers.CLIPTextModel if projection is None
             else transformers.CLIPTextModelWithProjection)
    return _meta(lambda: model(config))


def _vae(quick: bool, **extra: Any) -> Any:
    import diffusers

    return _meta(lambda: diffusers.AutoencoderKL(
        block_out_channels=(32, 32, 32, 32) if quick else (128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2, norm_num_groups=32, **extra))


def sd15_shapes(quick: bool) -> dict[str, tuple[str, tuple[int, ...]]]:
    import diffusers

    from .unet import SD15_UNET, TINY_UNET

    ldm_files, sdxl_tiny = _tests_helpers()
    unet = _meta(lambda: diffusers.UNet2DConditionModel(**(TINY_UNET if quick else SD15_UNET)))
    text = _clip(32, 2, 4, "quick_gelu", None) if quick else _clip(768, 12, 12, "quick_gelu", None)
    state = {**ldm_files.ldm_unet(unet.state_dict()), **ldm_files.ldm_vae(_vae(quick).state_dict()),
             **ldm_files.ldm_clip(sdxl_tiny._text_sd(text))}
    return _described(state, "F32")


def _sdxl_parts(quick: bool) -> dict[str, Any]:
    """SDXL base's networks on the meta device, by their diffusers folder names."""
    import diffusers

    from .sdxl import SDXL_BASE_UNET, TINY_SDXL_UNET

    widths = (32, 32) if quick else (768, 1280)
    return {
        "unet": _meta(lambda: diffusers.UNet2DConditionModel(
            **(TINY_SDXL_UNET if quick else SDXL_BASE_UNET))),
        "vae": _vae(quick, scaling_factor=0.13025, force_upcast=True),
        "text_encoder": _clip(widths[0], 2 if quick else 12, 4 if quick else 12, "quick_gelu",
                              None),
        "text_encoder_2": _clip(widths[1], 2 if quick else 32, 4 if quick else 20, "gelu",
                                widths[1])}


def sdxl_shapes(quick: bool) -> dict[str, tuple[str, tuple[int, ...]]]:
    _, sdxl_tiny = _tests_helpers()
    return _described(sdxl_tiny.ldm_state_dict(SimpleNamespace(**_sdxl_parts(quick))), "F16")


def write_clip_tokenizer(folder: Path, pad: str = "<|endoftext|>") -> None:
    """A CLIP tokenizer folder of the bundled vocabulary (vocab.json, merges.txt), padding
    with `pad` (SDXL's second tokenizer pads with "!")."""
    from diffusion.text.tokenizer import bundled_vocab

    vocab, merges = bundled_vocab()
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges))
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77,
                                                              "pad_token": pad}))


def write_t5_tokenizer(folder: Path) -> None:
    """A T5 tokenizer folder: T5 v1.1's tokenizer.json from the bundled vocabulary."""
    from diffusion.text.t5_tokenizer import bundled_t5_tokenizer

    folder.mkdir(parents=True)
    bundled_t5_tokenizer().save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "model_max_length": 512, "pad_token": "<pad>", "eos_token": "</s>",
        "unk_token": "<unk>"}))


_TIED_ALIASES = {"encoder.embed_tokens.weight"}


def _write_parts(root: Path, parts: dict[str, Any], code: str, pool: _Pool) -> int:
    """Each meta network of `parts` as a diffusers folder's subfolder (its config and a
    safetensors file of dtype `code`); returns the bytes written."""
    import diffusers

    total = 0
    for name, model in parts.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        if isinstance(model, diffusers.ModelMixin):
            model.save_config(folder)
            stem = "diffusion_pytorch_model"
        else:
            model.config.save_pretrained(folder)
            stem = "model"
        # a tied alias (T5's encoder.embed_tokens.weight of shared.weight) is left out: random
        # bytes of its own would untie it, and transformers would embed with other weights
        # than a loader reading shared.weight (real files hold the same values under both)
        state = {k: v for k, v in model.state_dict().items()
                 if not k.endswith("position_ids") and k not in _TIED_ALIASES}
        total += write_safetensors(folder / f"{stem}.safetensors", _described(state, code), pool)
    return total


def _model_index(root: Path, pipeline: str, scheduler: dict[str, Any],
                 parts: dict[str, tuple[str, str]]) -> None:
    (root / "scheduler").mkdir(exist_ok=True)
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler))
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": pipeline, "scheduler": ["diffusers", scheduler["_class_name"]],
        **{name: list(kind) for name, kind in parts.items()}}))


def write_sdxl_folder(root: Path, quick: bool, pool: _Pool) -> int:
    """An SDXL base diffusers folder (float16), its tokenizers of the bundled vocabulary and
    the published EulerDiscreteScheduler config; returns its bytes."""
    total = _write_parts(root, _sdxl_parts(quick), "F16", pool)
    write_clip_tokenizer(root / "tokenizer")
    write_clip_tokenizer(root / "tokenizer_2", pad="!")
    _model_index(root, "StableDiffusionXLPipeline", {
        "_class_name": "EulerDiscreteScheduler", "beta_start": 0.00085, "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
        "prediction_type": "epsilon", "steps_offset": 1, "timestep_spacing": "leading",
        "interpolation_type": "linear", "use_karras_sigmas": False}, {
        "text_encoder": ("transformers", "CLIPTextModel"),
        "text_encoder_2": ("transformers", "CLIPTextModelWithProjection"),
        "tokenizer": ("transformers", "CLIPTokenizer"),
        "tokenizer_2": ("transformers", "CLIPTokenizer"),
        "unet": ("diffusers", "UNet2DConditionModel"), "vae": ("diffusers", "AutoencoderKL")})
    return total


def write_flux_folder(root: Path, quick: bool, pool: _Pool, *, tokenizers: bool = False,
                      layers: tuple[int, int, int] | None = None) -> int:
    """A FLUX.1 dev diffusers folder (bfloat16), without tokenizer folders unless `tokenizers`
    (then the bundled CLIP and T5 vocabularies'); returns its bytes. `layers`: (double
    blocks, single blocks, T5 layers) in place of FLUX.1 dev's (19, 38, 24), the widths kept
    (a smaller load of the same tensor shapes)."""
    import diffusers
    import transformers

    from ._lowvram_flow import CLIP_L, FLUX_SCHEDULER, FLUX_VAE, T5_XXL, TINY
    from .flux import FLUX_DEV, TINY_FLUX

    vae = TINY["flux_vae"] if quick else FLUX_VAE
    levels = len(vae["block_out_channels"])
    blocks = {"down_block_types": ("DownEncoderBlock2D",) * levels,
              "up_block_types": ("UpDecoderBlock2D",) * levels}
    flux, t5 = (TINY_FLUX, TINY["t5"]) if quick else (FLUX_DEV, T5_XXL)
    if layers is not None:
        flux = {**flux, "num_layers": layers[0], "num_single_layers": layers[1]}
        t5 = {**t5, "num_layers": layers[2]}
    total = _write_parts(root, {
        "transformer": _meta(lambda: diffusers.FluxTransformer2DModel(**flux)),
        "vae": _meta(lambda: diffusers.AutoencoderKL(**vae, **blocks)),
        "text_encoder": _meta(lambda: transformers.CLIPTextModel(
            transformers.CLIPTextConfig(**(TINY["clip"] if quick else CLIP_L)))),
        "text_encoder_2": _meta(lambda: transformers.T5EncoderModel(
            transformers.T5Config(**t5))),
    }, "BF16", pool)
    if tokenizers:
        write_clip_tokenizer(root / "tokenizer")
        write_t5_tokenizer(root / "tokenizer_2")
    _model_index(root, "FluxPipeline",
                 {"_class_name": "FlowMatchEulerDiscreteScheduler", **FLUX_SCHEDULER}, {
                     "text_encoder": ("transformers", "CLIPTextModel"),
                     "text_encoder_2": ("transformers", "T5EncoderModel"),
                     "tokenizer": ("transformers", "CLIPTokenizer"),
                     "tokenizer_2": ("transformers", "T5TokenizerFast"),
                     "transformer": ("diffusers", "FluxTransformer2DModel"),
                     "vae": ("diffusers", "AutoencoderKL")})
    return total


def write(model: str, root: Path, quick: bool) -> dict[str, Any]:
    """Write `model`'s files under `root`: {"path", "bytes", "shapes_s", "write_s"}."""
    start = time.perf_counter()
    pool = _Pool()
    if model == "flux":
        path = root / "flux-dev"
        size = write_flux_folder(path, quick, pool)
        shapes_s = None
    else:
        shapes = (sd15_shapes if model == "sd15" else sdxl_shapes)(quick)
        shapes_s = round(time.perf_counter() - start, 3)
        path = root / f"{model}.safetensors"
        size = write_safetensors(path, shapes, pool)
    return {"path": str(path), "bytes": size, "shapes_s": shapes_s,
            "write_s": round(time.perf_counter() - start, 3)}

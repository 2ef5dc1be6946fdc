"""bench.lowvram's flow rows: FLUX.1 dev and Qwen-Image whole txt2img runs at 1024x1024 under
each memory mode (plain, --medvram, --lowvram, --max-vram), on random weights at the released
configs, built in-process (no files, no network).

Every network is built deferred (gpustd.nn.deferred) and loaded from `_RandomWeights`: one
pool of normal(0, 0.02) values drawn once, each tensor a window of it at an offset of its own
(norm scales 1 + that), so loading costs an upload and no drawing. The pipelines are the
ones the CLI loads (FluxPipeline, QwenImagePipeline behind FlowModel / QwenImageModel), with
the bundled CLIP and T5 tokenizers for FLUX and a byte-level tokenizer with Qwen's special
tokens for Qwen-Image (a prompt's text tokens are then its bytes: ~150 after the template's
first 34, where Qwen's own tokenizer gives ~15).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

import gpucore

from ._dit_models import QWEN25VL_7B, QWEN_IMAGE
from ._dit_models import TINY as _TINY_DITS
from .flux import FLUX_DEV, TINY_FLUX
from .sdxl import _PeakMemory, _settled_use

GIB = float(1 << 30)
PROMPT = "a lighthouse on a cliff at dusk, waves below"
# black-forest-labs/FLUX.1-dev: text_encoder (CLIP-L), text_encoder_2 (T5-XXL), vae,
# scheduler config.json files
CLIP_L: dict[str, Any] = dict(
    hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, vocab_size=49408, hidden_act="quick_gelu",
    layer_norm_eps=1e-5, projection_dim=768, bos_token_id=0, eos_token_id=2, pad_token_id=1,
    architectures=["CLIPTextModel"])
T5_XXL: dict[str, Any] = dict(
    vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
    relative_attention_num_buckets=32, relative_attention_max_distance=128,
    feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, dropout_rate=0.0)
FLUX_VAE: dict[str, Any] = dict(
    in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(128, 256, 512, 512),
    layers_per_block=2, norm_num_groups=32, scaling_factor=0.3611, shift_factor=0.1159,
    use_quant_conv=False, use_post_quant_conv=False, force_upcast=True)
FLUX_SCHEDULER: dict[str, Any] = dict(
    base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096, max_shift=1.15,
    num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True)
# Qwen/Qwen-Image: vae/config.json is the Qwen-Image VAE's defaults; scheduler_config.json
QWEN_VAE: dict[str, Any] = {}
QWEN_SCHEDULER: dict[str, Any] = dict(
    base_image_seq_len=256, base_shift=0.5, max_image_seq_len=8192, max_shift=0.9,
    num_train_timesteps=1000, shift=1.0, shift_terminal=0.02, time_shift_type="exponential",
    use_dynamic_shifting=True)
QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

TINY: dict[str, dict[str, Any]] = {
    "flux_transformer": TINY_FLUX,  # in_channels 16: 4 latent channels in 2x2 patches
    "clip": dict(CLIP_L, hidden_size=24, intermediate_size=37, num_hidden_layers=2,
                 num_attention_heads=2, projection_dim=24),
    "t5": dict(T5_XXL, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
               relative_attention_num_buckets=8, relative_attention_max_distance=20),
    "flux_vae": dict(FLUX_VAE, latent_channels=4, block_out_channels=(32, 64)),
    "qwen_transformer": dict(_TINY_DITS["qwenimage"], in_channels=16, out_channels=4),
    "qwen_llm": dict(_TINY_DITS["qwen25vl"], hidden_size=40, num_attention_heads=4,
                     num_key_value_heads=2),
    "qwen_vae": dict(base_dim=8, z_dim=4, dim_mult=[1, 2, 2], num_res_blocks=1,
                     temperal_downsample=[False, True], latents_mean=[0.0] * 4,
                     latents_std=[1.0] * 4),
}


class _RandomWeights(Mapping[str, np.ndarray]):
    """A module's state dict of random values (the module doc): `shape(key)` without data, as
    the loaders' lazy mappings, so `load_state_dict` uploads one tensor at a time."""

    def __init__(self, module: Any, pool: np.ndarray, seed: int) -> None:
        self.shapes = {key: tuple(t.shape) for key, t in module.named_parameters()}
        self.floats = {key: t.dtype.kind == "f" for key, t in module.named_parameters()}
        self.pool, self.rng = pool, np.random.default_rng(seed)

    def shape(self, key: str) -> tuple[int, ...]:
        return self.shapes[key]

    def __getitem__(self, key: str) -> np.ndarray:
        shape = self.shapes[key]
        size = math.prod(shape)
        if not self.floats[key]:
            return np.zeros(shape, np.int64)
        if size <= len(self.pool):
            start = int(self.rng.integers(0, len(self.pool) - size + 1))
            values = self.pool[start:start + size]
        else:
            values = np.resize(self.pool, size)
        owner, _, leaf = key.rpartition(".")
        if "norm" in owner.rpartition(".")[2] and leaf in ("weight", "gamma", "scale") \
                and size == shape[0]:
            values = values + np.float16(1.0)  # a norm's scale near one
        return values.reshape(shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)


def _random_network(build: Callable[[], Any], pool: np.ndarray, seed: int) -> Any:
    from gpustd.nn import deferred

    with deferred():
        module = build()
    module.load_state_dict(_RandomWeights(module, pool, seed))
    return module


def _byte_tokenizer(folder: Path) -> Path:
    """A tokenizer.json whose tokens are the 256 bytes (byte-level, no merges) and Qwen's
    special tokens, <|endoftext|> the padding."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tokenizer = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(sorted(alphabet))},
                                     merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(QWEN_SPECIAL)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"pad_token": "<|endoftext|>"}))
    return folder


def flux_model(device: gpucore.Device, dtype: Any, quick: bool, pool: np.ndarray) -> Any:
    """FLUX.1 dev (FlowModel "flux-dev") on random weights, every network on the GPU."""
    from diffusion.models import (
        AutoencoderKL,
        CLIPTextModel,
        FluxTransformer2DModel,
        T5EncoderModel,
    )
    from diffusion.pipelines.flow.flow_model import FlowModel
    from diffusion.pipelines.flow.flux import FluxPipeline
    from diffusion.text.t5_tokenizer import T5Tokenizer
    from diffusion.text.tokenizer import CLIPTokenizer

    place = {"dtype": dtype, "device": device}

    def config(name: str, full: dict[str, Any]) -> dict[str, Any]:
        return TINY[name] if quick else full

    pipe = FluxPipeline(
        text_encoder=_random_network(lambda: CLIPTextModel(config("clip", CLIP_L), **place),
                                     pool, 1),
        text_encoder_2=_random_network(lambda: T5EncoderModel(config("t5", T5_XXL), **place),
                                       pool, 2),
        transformer=_random_network(lambda: FluxTransformer2DModel(
            dict(config("flux_transformer", FLUX_DEV)), **place), pool, 3),
        vae=_random_network(lambda: AutoencoderKL(config("flux_vae", FLUX_VAE), **place),
                            pool, 4),
        tokenizer=CLIPTokenizer.from_pretrained(None), tokenizer_2=T5Tokenizer(None),
        scheduler_config=FLUX_SCHEDULER)
    return FlowModel(pipe, family="flux-dev", name="flux1-dev-random")


def qwenimage_model(device: gpucore.Device, dtype: Any, quick: bool, pool: np.ndarray) -> Any:
    """Qwen-Image (QwenImageModel) on random weights, every network on the GPU."""
    from diffusion.models.llm import LLMTextModel
    from diffusion.models.qwen_image import QwenImageTransformer2DModel
    from diffusion.models.qwen_image_vae import AutoencoderKLQwenImage
    from diffusion.pipelines.flow.qwen_image import QwenImagePipeline
    from diffusion.pipelines.flow.qwen_image_model import QWENIMAGE_DEFAULTS, QwenImageModel
    from diffusion.text.llm_tokenizer import LLMTokenizer

    place = {"dtype": dtype, "device": device}
    llm = dict(TINY["qwen_llm"] if quick else QWEN25VL_7B, model_type="qwen2_5_vl_text")
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = LLMTokenizer(_byte_tokenizer(Path(tmp)))
    pipe = QwenImagePipeline(
        text_encoder=_random_network(lambda: LLMTextModel(llm, **place), pool, 1),
        transformer=_random_network(lambda: QwenImageTransformer2DModel(
            dict(TINY["qwen_transformer"] if quick else QWEN_IMAGE), **place), pool, 3),
        vae=_random_network(lambda: AutoencoderKLQwenImage(
            TINY["qwen_vae"] if quick else QWEN_VAE, **place), pool, 4),
        tokenizer=tokenizer, scheduler_config=QWEN_SCHEDULER)
    return QwenImageModel(pipe, family="qwen-image", name="qwen-image-random",
                          defaults=QWENIMAGE_DEFAULTS)


# (build, CFG scale) of each model
MODELS: dict[str, tuple[Callable[..., Any], float]] = {
    "flux": (flux_model, 1.0),  # Forge's FLUX dev preset: CFG 1, distilled guidance 3.5
    "qwenimage": (qwenimage_model, 4.0),  # QwenImagePipeline's true CFG 4
}


def _budget(model: Any, quick: bool, plain_reserved: int) -> int:
    """--max-vram for `model`: its least budget (smallest_flow_budget) rounded up to whole
    GiB, plus 1 GiB for the activations; with --quick, halfway from the least to the plain
    run's peak."""
    from diffusion.pipelines.flow.flow_memory import smallest_flow_budget

    least = smallest_flow_budget(model.memory_layout())
    if quick:
        return least + max(0, plain_reserved - least) // 2
    return (-(-least // (1 << 30)) + 1) << 30


def _generate(model: Any, device: gpucore.Device, size: int, steps: int, cfg: float
              ) -> tuple[np.ndarray, float, float, int]:
    """(picture, seconds, seconds per step: the mean time between the step callbacks, the
    first step's text encoding left out, the device's peak allocated bytes by the last step:
    the text encoding's and the steps', not the decode's)."""
    marks: list[float] = []
    peak = [0]

    def on_step(done: int, total: int, latents: Any) -> None:
        marks.append(time.perf_counter())
        peak[0] = device.memory_stats().peak_allocated

    start = time.perf_counter()
    result = model.generate(PROMPT, steps=steps, width=size, height=size, seed=42,
                            sampler="Euler", cfg_scale=cfg, on_step=on_step)
    seconds = time.perf_counter() - start
    per_step = (marks[-1] - marks[0]) / (len(marks) - 1) if len(marks) > 1 else float("nan")
    return result.images[0], seconds, per_step, peak[0]


def mode_rows(name: str, device: gpucore.Device, quick: bool, steps: int, cuda: Any,
              emit: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
    """The model's rows: a warm-up run (the kernels' compile), then one timed run in each
    mode on the same loaded model, plain first, each mode's from every network in host
    memory (the CLI's load under a mode); every row's picture against the plain one."""
    from diffusion.pipelines.sd.memory import MemoryMode

    build, cfg = MODELS[name]
    dtype = np.float16 if device.has_f16 else np.float32
    size = 64 if quick else 1024
    pool = (np.random.default_rng(0).standard_normal(1 << (16 if quick else 26),
                                                     dtype=np.float32) * 0.02).astype(dtype)
    baseline = _settled_use(device, cuda)
    start = time.perf_counter()
    model = build(device, dtype, quick, pool)
    device.synchronize()
    load_s, weights = time.perf_counter() - start, device.memory_stats().allocated
    _generate(model, device, size, 1, cfg)  # warm: every kernel compiled
    rows: list[dict[str, Any]] = []
    plain: tuple[np.ndarray, float, int] | None = None
    for setting in ("plain", "--medvram", "--lowvram", "--max-vram"):
        budget = _budget(model, quick, plain[2]) if plain is not None else None
        mode = {"plain": MemoryMode(), "--medvram": MemoryMode(medvram=True),
                "--lowvram": MemoryMode(lowvram=True)}.get(setting, MemoryMode(max_vram=budget))
        if mode.max_vram:
            setting += f" {mode.max_vram >> 20}M"
        model.set_memory_mode(mode)
        if model._memory is not None:  # every network in host memory, as the CLI loads them
            model._memory.residency.evict_all()  # under a mode (a budget of 0 evicts a unit
            # only when the next one runs: the first run would start with all of them here)
        _settled_use(device, cuda)  # the driver has the evicted buffers back
        device.reset_peak_memory()
        created = device.buffers_created  # a mode that streams well reuses its buffers
        with _PeakMemory(cuda, baseline) as driver:
            image, seconds, per_step, sampling_peak = _generate(model, device, size, steps, cfg)
            device.synchronize()
        stats = device.memory_stats()
        if plain is None:
            plain = (image, seconds, stats.peak_reserved)
        residency = model._memory.residency if model._memory is not None else None
        row = {"kind": "mode", "model": name, "size": f"{size}x{size}", "setting": setting,
               "steps": steps, "seconds": seconds, "seconds_per_step": per_step,
               "vs_plain": seconds / plain[1],
               "peak_allocated_gib": stats.peak_allocated / GIB,
               "peak_reserved_gib": stats.peak_reserved / GIB,
               "sampling_peak_allocated_gib": sampling_peak / GIB,
               "decode_is_peak": stats.peak_allocated > sampling_peak,
               "driver_peak_gib": driver.peak,
               "budget_gib": mode.max_vram / GIB if mode.max_vram else None,
               "within_budget": stats.peak_reserved <= mode.max_vram if mode.max_vram else None,
               "weights_gib": weights / GIB, "load_s": load_s,
               "evictions": residency.evictions if residency else 0,
               "uploaded_gib": residency.uploaded / GIB if residency else 0.0,
               "buffers_created": device.buffers_created - created,
               "same_picture": bool(np.array_equal(image, plain[0])),
               "mean_pixel_diff": float(np.abs(image.astype(int) - plain[0]).mean()),
               "picture_std": float(image.std())}
        rows.append(row)
        emit(row)
    model.set_memory_mode(MemoryMode())
    return rows

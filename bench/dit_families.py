"""The 2025-26 families at full size: one transformer step of Qwen-Image, Qwen-Image 2.1,
FLUX.2 klein 9B, Chroma, FLUX.1 Kontext and Qwen-Image-Edit at 1024x1024, and one prompt
through the text encoders Z-Image's bench does not cover (Qwen2.5-VL-7B's language model for
Qwen-Image, Qwen3-VL-8B's for Qwen-Image 2.1, Qwen3-8B for klein 9B), random weights at the
real configs, ours against diffusers / transformers bf16 in one process.

As bench/zimage.py (whose weights, casts and memory readings these rows share): torch draws
the weights once on its device in bf16 (normal(0, 0.02); norm scales 1 + normal(0, 0.02)),
times the reference in bf16, hands them to the host one tensor at a time as float16 and frees
its copy; ours loads them (float16 where the adapter has shader-f16, float32 otherwise).
rel_err: ours against the bf16 reference on CUDA (fp32 on the CPU). Memory: ours from
Device.memory_stats (weights included), torch's from max_memory_allocated.

Shapes (batch 1, no CFG pass): Qwen-Image's transformer at 4096 patches and 222 text tokens
(256 less the 34 template tokens its pipeline drops); klein 9B's at 4096 patches and 512 text
tokens (Flux2KleinPipeline pads to 512); Chroma's at 4096 patches and 512 T5 tokens, unmasked;
Kontext's (FLUX.1 dev's config) at 4096 noise + 4096 context-image patches and 512 T5 tokens;
Qwen-Image-Edit's (Qwen-Image's config) at 4096 noise + 4096 reference patches (one 1024x1024
reference's latents, at rotary frame 1) and 1385 text tokens (that reference read by
Qwen2.5-VL: 37 x 37 = 1369 picture tokens, and a short instruction); Qwen-Image 2.1's at 4096
latent tokens (unpatched) after 256 text tokens, the step as its pipeline's after the first:
the prompt's keys and values made once (diffusers' kv_cache "extract", ours `prefix`; each
timed once, prefix_ms), the picture's tokens alone against them (kv_cache "cached": see
bench/_dit_qwen21.py). Qwen2.5-VL-7B's language model reads 256 tokens to its last hidden
states (Qwen-Image's), Qwen3-VL-8B's 256 to its last layer's before the final norm (Qwen-Image
2.1's), Qwen3-8B 512 tokens to hidden states 9, 18 and 27 (klein's). Krea 2's at 4096
patches for a 77-token prompt in its 512-token block (bench/_dit_krea2.py: diffusers' whole
masked block every step, ours the real tokens after the text fusion made once, prefix_ms).
Kandinsky 5 Image Lite's at 4096 patches and a 128-token prompt (bench/_dit_kandinsky5.py:
the states' projection once a prompt on our side, prefix_ms). HunyuanImage 2.1's at its
native 2048x2048 (4096 latent tokens) for 128 real tokens of its 1000-token Qwen2.5-VL block
and 16 of ByT5's 128 (bench/_dit_hunyuanimage.py: diffusers' padded blocks masked, ours the
real tokens alone). HunyuanVideo 1.5's at 480p, 121 frames (49 290 latent tokens), text to
video, for 128 real tokens of its 1000-token block and 16 of ByT5's 256
(bench/_dit_hunyuan_video15.py: diffusers' padded blocks and zero image tokens masked, ours
the real tokens alone, its prompt's part made once, prefix_ms). LTX-2's (2.0, 19B)
audio-video step for LTX2Pipeline's default 768x512, 121 frames (6144 video tokens) and its
126 audio latents, both prompts the connectors' 1024 tokens (bench/_dit_ltx2.py). Lumina
Image 2.0's at 4096 patches for 92 real tokens of its 256-token Gemma 2 block
(bench/_dit_lumina2.py). HunyuanVideo's at 960 x 544, 61 frames (32 640 video tokens) for 60
real tokens of its 256-token Llama block, guidance embedded (bench/_dit_hunyuan_video.py: ours
after prepare_text once, prefix_ms). LongCat-Image's at 4096 patches after its 512 prompt
tokens, unmasked (bench/_dit_longcat.py: ours after the rotary tables made once, prefix_ms).
Ovis-Image 7B's (6 double and 27 single SwiGLU blocks) at 4096 patches after its 256 Qwen3
places, unmasked (bench/_dit_ovis.py, as LongCat-Image's).
NucleusMoE-Image's (~17B: 32 blocks, 29 of them mixtures of 64 experts with expert-choice
routing) at 4096 patches after 128 Qwen3-VL-8B tokens, unmasked (bench/_dit_nucleus.py).
Bria FIBO's (8 double and 38 single blocks, each fed its own SmolLM3 layer) at 4096 latent
pixels after a 1024-token JSON caption (bench/_dit_fibo.py, as LongCat-Image's).
Bria 3.2's (8 double and 28 single blocks of 24 heads of 96) at 4096 patches after T5's 128
places (bench/_dit_bria.py, as Ovis-Image's).
PRX's (16 single-stream blocks 1792 wide) at 4096 patches for 64 real tokens of its 256-token
T5Gemma block (bench/_dit_prx.py: diffusers' padding masked, ours the real tokens alone).
Sana 1600M's at 1024x1024 (1024 tokens) and Sana 4K's at 4096x4096 (16 384 tokens) for 62 real
tokens of SanaPipeline's 300-token Gemma 2 block (bench/_dit_sana.py). HiDream-I1-Full's
(17B: 16 double and 32 single blocks of 4 experts top 2) at 4096 patches for T5's 128 tokens
and Llama 3.1 8B's 32 layers of 128 tokens, unmasked (bench/_dit_hidream.py). ERNIE-Image's
(8B: 36 shared-adaLN blocks) at 4096 patches after 256 prompt tokens (bench/_dit_ernie.py).
CogView4-6B's (28 blocks 4096 wide) at 4096 patches after 128 GLM-4 tokens, Cosmos Predict2
2B Text2Image's (28 blocks 2048 wide) at one frame of 4096 patches after T5's 512 places
(bench/_dit_cogview4.py).
Ideogram 4's conditional transformer (9B: 34 blocks) at 4096 patches after 256 prompt tokens of
Qwen3-VL's 13 taps (bench/_dit_ideogram4.py: diffusers' packed sequence with its segment mask,
ours unmasked, the features on the device once, prefix_ms).
PixArt-Σ XL/2 1024's at 4096 patches for 40 real tokens of its 300-token T5 block
(bench/_dit_pixart.py).
AuraFlow v0.3's (4 joint and 32 single blocks 3072 wide) at 4096 patches after UMT5's 256
states, 64 a prompt's and the padding's zeroed (bench/_dit_auraflow.py).
Rows run smallest first, each caught on its own: an out-of-memory model loses its row only,
recorded with its error.

BENCH_MODELS picks them, comma-separated, from sana, pixart, qwen3_8b, qwen25vl, qwen3vl_8b,
sana4k, lumina2, qwenimage21, krea2, kandinsky5, bria, longcat, ovis, nucleus, fibo, prx,
ernie, cosmos2, cogview4, ideogram4, auraflow, flux2klein, chroma, kontext, qwenimage,
qwenimageedit, hunyuanimage, hunyuanvideo15, hunyuanvideo, hidream, ltx2 (the default: all, in
that order), plus zimage and qwen3 (bench/zimage.py's rows).
BENCH_ACC16=1 adds each float16 transformer's step with every GEMM's f16 accumulators (`float16
acc16`, `--fp16-accumulation`). BENCH_KERNELS=1 adds each float16 row's fifteen longest kernels
(`kernels`: calls and GPU ms of one more step, timestamps on). `--quick`: tiny configs (a smoke
run on any adapter).
"""

from __future__ import annotations

import gc
import json
import os
import time
from typing import Any

import numpy as np

import gpucore

from . import _dit_auraflow as _auraflow
from . import _dit_bria as _bria
from . import _dit_cogview4 as _cogview4
from . import _dit_ernie as _ernie
from . import _dit_fibo as _fibo
from . import _dit_flux_qwen as _flux_qwen
from . import _dit_hidream as _hidream
from . import _dit_hunyuan_video as _hunyuan_video
from . import _dit_hunyuan_video15 as _hunyuan_video15
from . import _dit_hunyuanimage as _hunyuanimage
from . import _dit_ideogram4 as _ideogram4
from . import _dit_kandinsky5 as _kandinsky5
from . import _dit_krea2 as _krea2
from . import _dit_longcat as _longcat
from . import _dit_ltx2 as _ltx2
from . import _dit_lumina2 as _lumina2
from . import _dit_nucleus as _nucleus
from . import _dit_ovis as _ovis
from . import _dit_pixart as _pixart
from . import _dit_prx as _prx
from . import _dit_qwen21 as _qwen21
from . import _dit_sana as _sana
from . import _harness
from . import zimage as _zimage
from ._dit_models import TINY, Model
from .sdxl import _PeakMemory, _settled_use

GIB = float(1 << 30)
# each row's inputs and calls, a module a family (bench/_dit_*.py)
_ROW_MODULES = {name: module for module in (_flux_qwen, _qwen21, _krea2, _kandinsky5,
                                               _hunyuanimage, _hunyuan_video15, _ltx2,
                                               _lumina2, _hunyuan_video, _longcat, _ovis,
                                               _nucleus, _sana, _hidream, _ernie,
                                               _cogview4, _ideogram4, _pixart, _auraflow,
                                               _fibo, _bria, _prx)
                for name in module.NAMES}
COLUMNS = ["model", "impl", "dtype", "dispatches", "rel_err", "gpu_ms", "wall_ms", "peak_gib",
           "vs_bf16", "prefix_ms", "error"]


def _inputs(name: str, config: dict[str, Any], quick: bool) -> dict[str, np.ndarray]:
    return _ROW_MODULES[name].inputs(name, config, quick)


def _model(name: str) -> Model:
    return _ROW_MODULES[name].model(name)


def _reference(model: Model, config: dict[str, Any], dev: str) -> Any:
    """The reference built on `dev` in bf16, its weights drawn there (seed 0), as
    bench/zimage.py draws them."""
    import diffusers
    import torch
    import transformers

    torch.manual_seed(0)
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(dev):
            ref = model.reference(diffusers, transformers, dict(config))
    finally:
        torch.set_default_dtype(saved)
    ref = _zimage._cast(ref, torch.bfloat16).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if p.ndim == 1 and "norm" in name and name.endswith("weight"):
                p.normal_(1.0, 0.02)
            else:
                p.normal_(0.0, 0.02)
    return ref


def _on_torch(x: dict[str, Any], tdtype: Any, dev: str) -> dict[str, Any]:
    import torch

    out = {}
    for key, value in x.items():
        array = np.asarray(value)
        if key == "ids" or array.dtype == bool:
            out[key] = torch.from_numpy(array).to(dev)
        elif key in ("t", "guidance", "img_ids", "txt_ids", "position_ids"):
            out[key] = torch.from_numpy(array.astype(np.float32)).to(dev)
        else:
            out[key] = torch.from_numpy(array).to(dev, tdtype)
    return out


def _kernels(fn: Any, device: gpucore.Device) -> dict[str, Any]:
    """BENCH_KERNELS=1: one more call of ours' step with timestamps, its fifteen longest
    kernels' calls and GPU ms (where the step's time goes)."""
    with device.profile() as prof:
        fn()
    device.synchronize()
    ranked = list(prof.summary().items())[:15]  # slowest first
    kernels = {name: {"calls": calls, "ms": ns / 1e6} for name, (calls, ns) in ranked}
    print(f"kernels: {json.dumps(kernels, default=float)}", flush=True)
    return kernels


def _one_model(name: str, quick: bool, device: gpucore.Device, cuda: Any
               ) -> list[dict[str, Any]]:
    import torch

    model = _model(name)
    config = TINY[name] if quick else model.config
    repeat = 1 if quick else 3
    dtype = np.dtype(np.float16 if device.has_f16 else np.float32)
    dev = "cuda" if cuda else "cpu"
    ref = _reference(model, config, dev)
    x = _inputs(name, config, quick)
    rows = []
    tdtype = torch.bfloat16 if cuda else torch.float32
    _zimage._cast(ref, tdtype)
    x["torch"] = _on_torch({k: v for k, v in x.items() if k != "rows"}, tdtype, dev)
    prefix: dict[str, float] = {}  # the prompt's part, once before the steps: timed once
    with torch.no_grad():
        if model.torch_prefix is not None:
            model.torch_prefix(ref, x)
            if cuda:
                prefix["prefix_ms"] = _harness.torch_wall_ms(
                    lambda: model.torch_prefix(ref, x), torch, 1)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        expected = model.torch_call(ref, x).float().cpu().numpy()
        if cuda:
            call = lambda: model.torch_call(ref, x)  # noqa: E731
            rows.append({"model": name, "impl": "reference", "dtype": "bfloat16",
                         "gpu_ms": _harness.torch_cuda_ms(call, warmup=1, repeat=repeat),
                         "wall_ms": _harness.torch_wall_ms(call, torch, repeat),
                         "peak_gib": torch.cuda.max_memory_allocated() / GIB, **prefix})
            print(f"reference {name}: {rows[-1]['wall_ms']:.1f} ms", flush=True)
        else:
            rows.append({"model": name, "impl": "reference", "dtype": "float32"})
    wdtype = torch.float16 if dtype == np.float16 else torch.float32
    weights = {k: v.detach().to(wdtype).cpu().numpy() for k, v in ref.state_dict().items()
               if not k.endswith("inv_freq")}
    ref = None  # torch's copy freed before ours loads
    del x["torch"]
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    device.empty_pool()
    # (without CUDA there is no driver reading to wait for)
    settled = _settled_use(device, cuda) if cuda else float("nan")
    device.reset_peak_memory()
    base = device.memory_stats().allocated
    ours = model.ours(dict(config), dtype, device)
    ours.load_state_dict(weights, dtype=dtype)
    del weights
    gc.collect()
    if model.ours_prefix is not None:  # its kernels built, the clock raised, then timed once
        def make() -> None:
            x["prefix"] = model.ours_prefix(ours, x, dtype)
        gpucore.autotune.warm_clock(device, make)
        start = time.perf_counter()
        make()
        device.synchronize()
        prefix = {"prefix_ms": (time.perf_counter() - start) * 1e3}

    def fn() -> Any:
        return model.ours_call(ours, x, dtype)

    device.reset_peak_memory()
    with _PeakMemory(cuda, settled) as driver:
        got = np.asarray(fn().numpy(), np.float64).reshape(expected.shape)
    step = device.memory_stats()
    timing = _harness.ours_ms(fn, device, warmup=1, repeat=repeat)
    row = {"model": name, "impl": "ours", "dtype": dtype.name, **timing,
           "peak_gib": (step.peak_allocated - base) / GIB, "driver_step_peak_gib": driver.peak,
           "rel_err": float(np.abs(got - expected).max() / np.abs(expected).max()), **prefix}
    if os.environ.get("BENCH_KERNELS") == "1" and device.has_timestamps:
        row["kernels"] = _kernels(fn, device)
    rows.append(row)
    if os.environ.get("BENCH_ACC16") == "1" and dtype == np.float16:
        timing, got = _zimage.acc16_call(fn, device, repeat)
        got = got.reshape(expected.shape)
        rows.append({"model": name, "impl": "ours", "dtype": "float16 acc16", **timing,
                     "rel_err": float(np.abs(got - expected).max() / np.abs(expected).max())})
        print(f"ours {name} float16 acc16: {timing['wall_ms']:.1f} ms", flush=True)
    for ours_row in rows[1:]:
        if "wall_ms" in rows[0]:
            ours_row["vs_bf16"] = rows[0]["wall_ms"] / ours_row["wall_ms"]
    ours = None
    gc.collect()
    device.empty_pool()
    return rows


DEFAULT = ("sana", "pixart",
           "qwen3_8b", "qwen25vl", "qwen3vl_8b", "sana4k", "lumina2", "qwenimage21",
           "krea2", "kandinsky5", "bria", "longcat", "ovis", "nucleus", "fibo", "prx",
           "ernie", "cosmos2", "cogview4", "ideogram4", "auraflow", "flux2klein", "chroma",
           "kontext", "qwenimage", "qwenimageedit", "hunyuanimage", "hunyuanvideo15",
           "hunyuanvideo", "hidream", "ltx2")


def run(quick: bool = False) -> dict[str, Any]:
    device = gpucore.default_device()
    cuda = _harness.torch_cuda()
    wanted = [m for m in os.environ.get("BENCH_MODELS", ",".join(DEFAULT)).split(",") if m]
    known = (*DEFAULT, "zimage", "qwen3")
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        raise ValueError(f"BENCH_MODELS names {unknown}; use any of {', '.join(known)}, "
                         "comma-separated (e.g. BENCH_MODELS=qwenimage,flux2klein)")
    rows: list[dict[str, Any]] = []
    for name in wanted:
        start = time.perf_counter()
        try:
            one = (_zimage._one_model if name in ("zimage", "qwen3") else _one_model)
            model_rows = one(name, quick, device, cuda)
        except Exception as exc:  # an out-of-memory model loses its row only
            model_rows = [{"model": name, "impl": "ours", "error": f"{type(exc).__name__}: "
                                                                   f"{str(exc)[:300]}"}]
            gc.collect()
            device.empty_pool()
            if cuda:
                cuda.cuda.empty_cache()
        print(json.dumps(model_rows, default=float), f"({time.perf_counter() - start:.0f} s)",
              flush=True)  # a cut-off run keeps it
        rows += model_rows
    return {
        "benchmark": "dit_families",
        "environment": _harness.environment(device),
        "notes": "One transformer step at 1024x1024, batch 1: Qwen-Image (4096 patches, 222 "
                 "text tokens), Qwen-Image 2.1 (4096 latent tokens after a 256-token prompt's "
                 "keys and values, made once: diffusers' kv_cache 'cached' step after its "
                 "'extract' one, ours after prefix(); prefix_ms: that once-a-prompt call, "
                 "timed once), Krea 2 (4096 patches, a 77-token prompt: diffusers the whole "
                 "masked 512-token block and its text fusion every step, ours the real tokens "
                 "after text() made once, prefix_ms), FLUX.2 klein 9B (4096 patches, 512 "
                 "text tokens), Kandinsky 5 Image Lite (4096 patches, 128 text tokens, "
                 "ours after text() once, prefix_ms), Chroma "
                 "(4096 patches, 512 T5 tokens, unmasked), FLUX.1 Kontext dev (4096 noise + "
                 "4096 context patches, 512 T5 tokens), Qwen-Image-Edit (4096 noise + 4096 "
                 "reference patches, 1385 text tokens: a 1024x1024 reference read by "
                 "Qwen2.5-VL and a short instruction), HunyuanVideo 1.5 (480p, 121 frames, "
                 "text to video: ours after prepare_text() once, prefix_ms), Lumina Image "
                 "2.0 (4096 patches, 92 real tokens of a masked 256-token block), "
                 "HunyuanVideo (960x544, 61 frames, 60 real tokens of a masked 256-token "
                 "block, guidance embedded: ours after prepare_text() once, prefix_ms), "
                 "LongCat-Image (4096 patches after 512 unmasked text tokens: ours after "
                 "its rotary tables once, prefix_ms), PRX (4096 patches, 64 real tokens of a "
                 "masked 256-token block: ours the real tokens alone), Sana 1600M (1024 "
                 "tokens) and Sana 4K "
                 "(16 384 tokens) for 62 real tokens of a masked 300-token block; "
                 "Qwen2.5-VL-7B's "
                 "language model on 256 "
                 "tokens (last hidden states), Qwen3-VL-8B's language model on 256 tokens (the "
                 "last layer's states before the final norm), Qwen3-8B on 512 tokens (hidden "
                 "states 9, 18, 27 concatenated, klein's); random bf16 weights drawn by "
                 "torch (normal(0, 0.02), norm scales 1 + normal(0, 0.02)) shared by both "
                 "rows; ours float16 "
                 "(float32 without shader-f16), eager; rel_err = max|ours - reference| / "
                 "max|reference| against the reference in bf16 on CUDA (fp32 on the CPU); "
                 "wall_ms medians; vs_bf16 = reference wall_ms / ours (above 1: we are "
                 "faster); peak_gib: reference torch.cuda.max_memory_allocated, ours "
                 "Device.memory_stats peak above the level before loading, weights included",
        "columns": COLUMNS,
        "rows": rows,
    }

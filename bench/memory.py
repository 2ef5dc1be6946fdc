"""Peak device memory of loading and of a whole txt2img, ours beside diffusers fp16.

Models: SD 1.5 at 512x512 and SDXL base at 1024x1024 (random full-size weights from diffusers'
published configs, saved as a diffusers folder first), float16, 20 steps, CFG 7, Euler. Ours:
`Device.memory_stats()` (bytes in live buffers, at their size classes; `reserved` adds the
pool's idle buffers), peaks above what was in use before the model. Theirs:
`torch.cuda.max_memory_allocated` above the same baseline (CUDA only; the row says None
elsewhere). `--quick`: tiny models at 64x64 and 2 steps (a smoke run on any adapter).
Row sd15-q8_0: SD 1.5 with its UNet from a Q8_0 GGUF (weights kept quantized); unet_gib is the
UNet's weights alone; gguf_unet_loaded_gib / gguf_unet_load_peak_gib: what loading that GGUF holds
and its peak, above what was held before it (target: peak <= 1.1x loaded; the float UNet built first
made it the float size). BENCH_MEMORY_MODELS=sd15 (sd15-q8_0, sdxl; comma-separated) keeps only
those rows. BENCH_MEMORY_TRACE=1 runs our txt2img under gpucore.trace_memory: each stage's high
(text encoder, UNet, VAE decode) goes in the row as ours_stages_gib, and what is live at the peak,
by origin, is printed. BENCH_MEMORY_STEPS=N: N steps. BENCH_MEMORY_DRY=1 (wgpu-native only): our
dispatches are recorded but none runs, so a CPU adapter traces a full-size picture's allocations in
seconds (sizes and lifetimes as in a real run, values zeros: a measuring aid, never a result to
compare speed or pictures with).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

import gpucore

from . import _harness
from ._cold_files import write_clip_tokenizer
from .sdxl import SDXL_BASE_UNET, TINY_SDXL_UNET, _PeakMemory, _settled_use
from .txt2img import write_sd15_folder

COLUMNS = ["model", "size", "steps", "unet_gib", "weights_gib", "ours_load_peak_gib",
           "ours_txt2img_peak_gib", "ours_txt2img_reserved_gib", "driver_load_peak_gib",
           "driver_txt2img_peak_gib", "diffusers_weights_gib",
           "diffusers_load_peak_gib", "diffusers_txt2img_peak_gib", "txt2img_vs_diffusers",
           "gguf_unet_loaded_gib", "gguf_unet_load_peak_gib"]
GIB = float(1 << 30)


def write_sdxl_folder(root: Path, quick: bool) -> None:
    """An SDXL base pipeline folder with random weights (float16 on disk: 7 GB, not 14)."""
    import diffusers
    import torch
    import transformers

    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(**(TINY_SDXL_UNET if quick else SDXL_BASE_UNET))
    vae = diffusers.AutoencoderKL(
        block_out_channels=(32, 32, 32, 32) if quick else (128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2, latent_channels=4, norm_num_groups=32, scaling_factor=0.13025,
        force_upcast=True, sample_size=1024)
    # CLIP ViT-L and OpenCLIP bigG (with projection); tiny: 32 wide, as TINY_SDXL_UNET expects
    widths = (32, 32) if quick else (768, 1280)
    layers = (2, 2) if quick else (12, 32)
    heads = (4, 4) if quick else (12, 20)
    models = [transformers.CLIPTextModel, transformers.CLIPTextModelWithProjection]
    for i, (width, depth, head, model) in enumerate(zip(widths, layers, heads, models)):
        config = transformers.CLIPTextConfig(
            hidden_size=width, intermediate_size=4 * width, num_hidden_layers=depth,
            num_attention_heads=head, max_position_embeddings=77, vocab_size=49408,
            hidden_act="quick_gelu" if i == 0 else "gelu", projection_dim=widths[1])
        suffix = "" if i == 0 else "_2"
        encoder = model(config)
        (encoder if quick else encoder.half()).save_pretrained(root / f"text_encoder{suffix}")
        write_clip_tokenizer(root / f"tokenizer{suffix}", "<|endoftext|>" if i == 0 else "!")
    (unet.half() if not quick else unet).save_pretrained(root / "unet")
    (vae.half() if not quick else vae).save_pretrained(root / "vae")
    diffusers.EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
        timestep_spacing="leading").save_pretrained(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionXLPipeline", "force_zeros_for_empty_prompt": True,
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}))


def _or_none(gib: float) -> float | None:
    """_PeakMemory's nan (no CUDA) as None, which the table and JSON show as such."""
    return None if gib != gib else gib


def _unet_gib(unet: Any) -> float:
    """Bytes of the UNet's weights: float parameters plus quantized blocks."""
    from gpustd.nn.quantized import quantized_weights

    floats = sum(t.buffer.nbytes for t in unet.parameters())
    return (floats + sum(q.nbytes for q in quantized_weights(unet).values())) / GIB


def _quantized_unet(pipe: Any, root: Path, device: gpucore.Device, format: str
                    ) -> tuple[Any, dict[str, float]]:
    """The pipeline's UNet again, from a GGUF of it in `format` (weights kept quantized), and
    what its load held: the loaded bytes and the load's peak above them (GiB; the issue's
    target: peak <= 1.1x loaded)."""
    from diffusion.loaders import load_pipeline_weights
    from diffusion.loaders.formats.gguf_write import write_gguf
    from diffusion.loaders.sd.gguf_unet import load_unet_gguf

    unet = load_pipeline_weights(root).unet
    path = root / f"unet-{format}.gguf"
    architecture = "sdxl" if "add_embedding.linear_1.weight" in unet else "sd1"
    write_gguf(path, ((name, unet[name]) for name in unet), format, architecture=architecture)
    dtype = pipe.unet.conv_in.weight.dtype
    del unet
    gc.collect()
    device.empty_pool()
    before = device.memory_stats().allocated
    device.reset_peak_memory()
    quantized = load_unet_gguf(path, dtype=dtype, device=device, config=dict(pipe.unet.config))
    stats = device.memory_stats()  # the GGUF load's own: the float UNet is still held beside
    load = {"gguf_unet_loaded_gib": (stats.allocated - before) / GIB,
            "gguf_unet_load_peak_gib": (stats.peak_allocated - before) / GIB}
    return quantized, load


@contextlib.contextmanager
def _staged(device: gpucore.Device) -> Iterator[gpucore.MemoryTrace | None]:
    """gpucore.trace_memory over the block with the models' calls as its stages, when
    BENCH_MEMORY_TRACE is set (else None)."""
    if not os.environ.get("BENCH_MEMORY_TRACE"):
        yield None
        return
    from diffusion.models import AutoencoderKL, CLIPTextModel, UNet2DConditionModel

    calls = [(CLIPTextModel, "__call__", "text encoder"), (UNet2DConditionModel, "__call__",
             "unet"), (AutoencoderKL, "decode", "vae decode")]
    originals = [getattr(cls, name) for cls, name, _ in calls]
    with gpucore.trace_memory(device, skip=("gpustd",)) as trace:
        def stage(method: Any, label: str) -> Any:
            def run(*args: Any, **kwargs: Any) -> Any:
                with trace.stage(label):
                    return method(*args, **kwargs)
            return run

        for (cls, name, label), method in zip(calls, originals):
            setattr(cls, name, stage(method, label))
        try:
            yield trace
        finally:
            for (cls, name, _), method in zip(calls, originals):
                setattr(cls, name, method)


@contextlib.contextmanager
def _dry(wanted: bool) -> Iterator[None]:
    """With `wanted` (BENCH_MEMORY_DRY), wgpu-native's compute passes drop their dispatches
    (replays included) and prompt weighting skips its mean rescaling (zeros / zeros)."""
    if not wanted:
        yield
        return
    import wgpu.backends.wgpu_native._api as native

    from diffusion.text import conditioning

    patches = [(native.GPUComputePassEncoder, "dispatch_workgroups", lambda self, *a: None),
               (gpucore._capture, "NATIVE_REPLAY", False),
               (conditioning, "_apply_emphasis", lambda z, *a: z)]
    saved = [getattr(owner, name) for owner, name, _ in patches]
    for owner, name, value in patches:
        setattr(owner, name, value)
    try:
        yield
    finally:
        for (owner, name, _), value in zip(patches, saved):
            setattr(owner, name, value)


def _ours(root: Path, device: gpucore.Device, settings: dict[str, Any],
          quantize: str | None = None) -> dict[str, float | None]:
    """Our load and txt2img peaks (GiB above the use before loading): memory_stats', and with
    CUDA the driver's (cudaMemGetInfo sampled every 3 ms: wgpu's staging copies and the
    driver's own allocations included, which memory_stats does not see). `quantize`: the UNet
    is swapped for its GGUF in that format after loading (no load peak then)."""
    from diffusion import load_pipeline

    cuda = _harness.torch_cuda()
    settled = _settled_use(device, cuda)
    device.reset_peak_memory()
    base = device.memory_stats().allocated
    with _PeakMemory(cuda, settled) as load_driver:
        pipe = load_pipeline(root, device=device,
                             dtype=np.float16 if device.has_f16 else np.float32)
        gguf_load: dict[str, float] = {}
        if quantize:
            pipe.unet, gguf_load = _quantized_unet(pipe, root, device, quantize)
            gc.collect()
            device.empty_pool()
        device.synchronize()
    loaded = device.memory_stats()
    unet_gib = _unet_gib(pipe.unet)
    device.reset_peak_memory()
    with _PeakMemory(cuda, settled) as run_driver, _staged(device) as trace:
        pipe.txt2img(**settings, sampler="Euler")
        device.synchronize()
    done = device.memory_stats()
    stages = None
    if trace is not None:
        print(trace.report(), flush=True)
        stages = {label or "other": (high - base) / GIB for label, high in trace.stages.items()}
    pipe = None
    _settled_use(device, cuda)
    load_peak = None if quantize else (loaded.peak_reserved - base) / GIB
    return {"unet_gib": unet_gib, "weights_gib": (loaded.allocated - base) / GIB,
            "ours_load_peak_gib": load_peak,
            "ours_txt2img_peak_gib": (done.peak_allocated - base) / GIB,
            "ours_txt2img_reserved_gib": (done.peak_reserved - base) / GIB,
            "driver_load_peak_gib": None if quantize else _or_none(load_driver.peak),
            "driver_txt2img_peak_gib": _or_none(run_driver.peak), **gguf_load,
            **({"ours_stages_gib": stages} if stages else {})}


def _theirs(root: Path, sdxl: bool, settings: dict[str, Any]) -> dict[str, float | None]:
    """diffusers fp16's load and txt2img peaks (torch.cuda.max_memory_allocated), or Nones."""
    torch = _harness.torch_cuda()
    if torch is None:
        return {"diffusers_weights_gib": None, "diffusers_load_peak_gib": None,
                "diffusers_txt2img_peak_gib": None}
    import diffusers

    kind = diffusers.StableDiffusionXLPipeline if sdxl else diffusers.StableDiffusionPipeline
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    extra = {} if sdxl else {"safety_checker": None}
    pipe = kind.from_pretrained(root, torch_dtype=torch.float16, **extra).to("cuda")
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    weights, load_peak = torch.cuda.memory_allocated() - base, torch.cuda.max_memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    pipe(settings["prompt"], negative_prompt=settings["negative_prompt"],
         num_inference_steps=settings["steps"], guidance_scale=settings["cfg_scale"],
         height=settings["height"], width=settings["width"], output_type="np",
         generator=torch.Generator("cpu").manual_seed(0))
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    pipe = None
    gc.collect()
    torch.cuda.empty_cache()
    return {"diffusers_weights_gib": weights / GIB,
            "diffusers_load_peak_gib": (load_peak - base) / GIB,
            "diffusers_txt2img_peak_gib": (peak - base) / GIB}


def run(quick: bool = False) -> dict[str, Any]:
    device = gpucore.default_device()
    wanted = os.environ.get("BENCH_MEMORY_MODELS", "sd15,sd15-q8_0,sdxl").split(",")
    steps = int(os.environ.get("BENCH_MEMORY_STEPS", 2 if quick else 20))
    rows = []
    for model, sdxl, size, write in (("sd15", False, 512, write_sd15_folder),
                                     ("sd15-q8_0", False, 512, write_sd15_folder),
                                     ("sdxl", True, 1024, write_sdxl_folder)):
        if model not in wanted:
            continue
        size = 64 if quick else size
        quantize = model.partition("-")[2] or None  # "sd15-q8_0": the UNet as Q8_0 GGUF
        settings = dict(prompt="a lighthouse on a cliff at dusk", negative_prompt="blurry",
                        steps=steps, cfg_scale=7.0, seed=42, width=size, height=size)
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            write(root, quick)
            with _dry(bool(os.environ.get("BENCH_MEMORY_DRY"))):
                ours = _ours(root, device, settings, quantize)
            row: dict[str, Any] = {"model": model, "size": f"{size}x{size}", "steps": steps,
                                   **ours, **_theirs(root, sdxl, settings)}
        theirs = row["diffusers_txt2img_peak_gib"]
        row["txt2img_vs_diffusers"] = row["ours_txt2img_peak_gib"] / theirs if theirs else None
        rows.append(row)
        print(json.dumps(row), flush=True)  # a row at a time: a cut-off run keeps it
    return {
        "benchmark": "memory",
        "environment": _harness.environment(device),
        "notes": "GiB of device memory above the use before loading; ours: Device.memory_stats "
                 "(weights = live buffers after loading; load peak and txt2img reserved count "
                 "the pool's idle buffers too; txt2img peak = buffers in use); driver_*: "
                 "cudaMemGetInfo's peak (wgpu staging and driver allocations included); "
                 "diffusers "
                 "fp16: torch.cuda.max_memory_allocated; txt2img_vs_diffusers = ours / theirs "
                 "(<= 1 is the target); float16 where the adapter has it",
        "columns": COLUMNS,
        "rows": rows,
    }

"""Whole pictures of SDXL base and FLUX.1 dev at 1024x1024 (random weights): ours beside
diffusers, wall seconds per picture including text encoding and the VAE decode.

Each model's diffusers folder is written once (bench._cold_files: random full-size weights,
SDXL in float16, FLUX.1 dev in bfloat16 as published, 34 GB; tokenizers of the bundled
vocabularies) to a temporary folder (BENCH_TMP, else the system's), loaded by diffusers
(SDXL fp16, FLUX bf16 on CUDA; float32 on torch's CPU), freed, then loaded by ours
(`diffusion.load_pipeline`, float16 where the adapter has shader-f16, else float32), freed,
and the folder deleted before the next model.

- SDXL base: 30 steps of Euler (ours: the WebUI's "Euler"; diffusers: the folder's
  EulerDiscreteScheduler), CFG 7 with a negative prompt, one picture;
- FLUX.1 dev: 20 steps of FlowMatchEulerDiscreteScheduler (ours: the "diffusers" sampler, the
  pipeline's own loop over the same shifted sigmas), distilled guidance 3.5, CFG 1, 512 T5
  tokens (max_sequence_length=512 on both sides).

Seconds: the median of 3 pictures after a warm-up one (diffusers: the faster of
cudnn.benchmark off and on). step_s: seconds a step, the mean time between step callbacks
(the first step left out; ours from the timed pictures' progress callback, which follows a
read-back of the latents; diffusers from its warm-up picture's callback_on_step_end with a
CUDA synchronize, so that the timed pictures run without one); steps_share = step_s x steps /
seconds. BENCH_MODELS=sdxl,flux picks the models (default both). `--quick`: the benches'
tiny configs at 64x64, 2 steps, one timed picture (a smoke run on any adapter).
BENCH_ACC16=1 times ours again under --fp16-accumulation (ours_acc16_s, ours_acc16_step_s,
vs_diffusers_acc16; acc16_vs_f16_levels: its picture's mean distance from the float16 one).

BENCH_PICTURES_REFS=bf16,fp16,fp32 (FLUX): a parity check, untimed. From one float32 noise
and diffusers' float32 prompt embeddings, diffusers' picture in each dtype named (fp32 always),
ours, and ours from our own text encoders, one pipeline at a time; each against fp32's and
fp16's in levels (0..255), its latents' relative difference from fp32's after each step and
of the first step's increment. seconds: one picture's (ours: the first builds the kernels).
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import gpucore

from . import _cold_files, _harness

COLUMNS = ["model", "size", "steps", "ours_s", "diffusers_s", "vs_diffusers", "ours_step_s",
           "diffusers_step_s", "ours_steps_share", "diffusers_steps_share", "mean_abs_diff",
           "ours_acc16_s", "vs_diffusers_acc16"]
REF_COLUMNS = ["model", "size", "steps", "picture", "mean_vs_fp32", "max_vs_fp32",
               "mean_vs_fp16", "max_vs_fp16", "latents_rel_vs_fp32", "first_step_rel_vs_fp32",
               "picture_std", "seconds"]
REFS = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
PROMPT = "a lighthouse on a cliff at dusk, waves below"
NEGATIVE = "blurry, low quality"


@dataclass(frozen=True)
class Setting:
    """One model's picture: its folder writer, diffusers' pipeline class and dtype on CUDA,
    the steps, our sampler, and the scales (CFG; FLUX: its distilled guidance)."""

    write: Callable[[Path, bool, Any], int]
    pipeline: str
    cuda_dtype: str
    steps: int
    sampler: str
    cfg_scale: float
    distilled_cfg_scale: float | None = None


SETTINGS = {
    "sdxl": Setting(_cold_files.write_sdxl_folder, "StableDiffusionXLPipeline", "float16",
                    30, "Euler", 7.0),
    "flux": Setting(lambda root, quick, pool: _cold_files.write_flux_folder(
        root, quick, pool, tokenizers=True), "FluxPipeline", "bfloat16", 20, "diffusers", 1.0,
        3.5),
}


def _per_step(marks: list[float]) -> float | None:
    """Mean seconds between step callbacks, the first step (before the first mark) left out."""
    return (marks[-1] - marks[0]) / (len(marks) - 1) if len(marks) > 1 else None


def _median(generate: Callable[[], None], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        generate()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _diffusers(root: Path, setting: Setting, size: int, steps: int, repeat: int,
               cuda: bool) -> tuple[np.ndarray, dict[str, Any]]:
    """diffusers' picture and columns: load, a warm-up picture (its steps timed) and the
    median of `repeat`, under cudnn.benchmark off and on (CUDA), the faster kept."""
    import diffusers
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dtype = getattr(torch, setting.cuda_dtype) if cuda else torch.float32
    start = time.perf_counter()
    pipe = getattr(diffusers, setting.pipeline).from_pretrained(root, torch_dtype=dtype)
    pipe = pipe.to("cuda" if cuda else "cpu")
    if cuda:
        torch.cuda.synchronize()
    load_s = time.perf_counter() - start
    pipe.set_progress_bar_config(disable=True)
    call: dict[str, Any] = dict(prompt=PROMPT, num_inference_steps=steps, height=size,
                                width=size, output_type="np")
    if setting.distilled_cfg_scale is None:
        call.update(negative_prompt=NEGATIVE, guidance_scale=setting.cfg_scale)
    else:  # FluxPipeline: guidance_scale is the distilled guidance, no CFG
        call.update(guidance_scale=setting.distilled_cfg_scale, max_sequence_length=512)
    marks: list[float] = []

    def on_step(pipe: Any, index: int, timestep: Any, tensors: dict[str, Any]
                ) -> dict[str, Any]:
        if cuda:
            torch.cuda.synchronize()
        marks.append(time.perf_counter())
        return tensors

    pictures: list[np.ndarray] = []

    def generate(timed_steps: bool = False) -> None:
        out = pipe(**call, generator=torch.Generator("cpu").manual_seed(42),
                   callback_on_step_end=on_step if timed_steps else None).images[0]
        pictures[:] = [_levels(out)]  # waits for the GPU

    runs = []
    saved = torch.backends.cudnn.benchmark
    try:
        for flag in (False, True) if cuda else (False,):
            torch.backends.cudnn.benchmark = flag
            marks.clear()
            generate(timed_steps=True)
            runs.append((_median(generate, repeat), _per_step(marks), flag))
    finally:
        torch.backends.cudnn.benchmark = saved
    seconds, step_s, flag = min(runs, key=lambda run: run[0])
    return pictures[0], {
        "diffusers_s": seconds, "diffusers_step_s": step_s, "diffusers_load_s": load_s,
        "diffusers_dtype": str(dtype).removeprefix("torch."), "diffusers_cudnn_benchmark": flag,
        "diffusers_s_by_cudnn_benchmark": {str(run[2]): run[0] for run in runs}}


def _ours(root: Path, setting: Setting, size: int, steps: int, repeat: int,
          device: gpucore.Device) -> tuple[np.ndarray, dict[str, Any]]:
    """Our picture and columns: load, a warm-up picture (the kernels' builds) and the median
    of `repeat`."""
    from diffusion import load_pipeline

    dtype = np.float16 if device.has_f16 else np.float32
    start = time.perf_counter()
    pipe = load_pipeline(root, device=device, dtype=dtype)
    device.synchronize()
    load_s = time.perf_counter() - start
    marks: list[float] = []
    # FLUX: the noise from torch's CPU generator, as diffusers draws it
    extra = ({"negative_prompt": NEGATIVE} if setting.distilled_cfg_scale is None
             else {"distilled_cfg_scale": setting.distilled_cfg_scale, "rng": "torch"})
    pictures: list[np.ndarray] = []

    def generate() -> None:
        marks.clear()
        pictures[:] = pipe.generate(
            PROMPT, steps=steps, cfg_scale=setting.cfg_scale, sampler=setting.sampler, seed=42,
            width=size, height=size,
            progress=lambda done, total: marks.append(time.perf_counter()), **extra).images

    def timed(prefix: str) -> dict[str, Any]:
        generate()
        per_step = []
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            generate()
            times.append(time.perf_counter() - start)
            per_step.append(_per_step(marks))
        steps_known = [s for s in per_step if s is not None]
        return {f"{prefix}_s": statistics.median(times),
                f"{prefix}_step_s": statistics.median(steps_known) if steps_known else None}

    columns = {**timed("ours"), "ours_load_s": load_s, "ours_dtype": np.dtype(dtype).name}
    picture = pictures[0]
    if os.environ.get("BENCH_ACC16") == "1":  # the same pictures under --fp16-accumulation
        from diffusion.pipelines.fp16_accumulation import use_fp16_accumulation

        print(use_fp16_accumulation(pipe), flush=True)
        columns.update(timed("ours_acc16"))
        columns["acc16_vs_f16_levels"] = float(np.abs(
            np.asarray(pictures[0], np.int32) - np.asarray(picture, np.int32)).mean())
    return picture, columns


def _free(device: gpucore.Device, cuda: bool) -> None:
    """What a side's pipeline held, given back (FLUX.1 dev's two copies do not fit at once)."""
    gc.collect()
    device.empty_pool()
    if cuda:
        import torch

        torch.cuda.empty_cache()


def _pictures(mine: np.ndarray, theirs: np.ndarray, compared: bool) -> dict[str, Any]:
    """Each side's picture's spread (0..255 levels: a flat or broken picture shows as ~0) and,
    where both start from the same noise and schedule (`compared`: FLUX), their difference."""
    row: dict[str, Any] = {"ours_picture_std": float(mine.std()),
                           "diffusers_picture_std": float(theirs.std())}
    return {**row, **_apart(mine, theirs, "_abs_diff")} if compared else row


def _apart(picture: np.ndarray, reference: np.ndarray, suffix: str) -> dict[str, Any]:
    """Two uint8 pictures' mean and max absolute difference, in levels (0..255)."""
    diff = np.abs(picture.astype(np.int16) - reference.astype(np.int16))
    return {f"mean{suffix}": float(diff.mean()), f"max{suffix}": int(diff.max())}


def _refs() -> list[str]:
    """BENCH_PICTURES_REFS' dtypes in the order of REFS, fp32 among them where any is named."""
    wanted = [r for r in os.environ.get("BENCH_PICTURES_REFS", "").split(",") if r]
    unknown = [r for r in wanted if r not in REFS]
    if unknown:
        raise ValueError(f"BENCH_PICTURES_REFS names {unknown}; use any of {', '.join(REFS)}")
    return [r for r in REFS if r in wanted or (wanted and r == "fp32")]


def _levels(picture: np.ndarray) -> np.ndarray:  # [0, 1] -> uint8 levels
    return np.round(picture * 255).astype(np.uint8)


def _rel(value: Any, reference: Any) -> float:
    """|value - reference| / |reference| (L2, in float64)."""
    value, reference = (np.asarray(v, np.float64) for v in (value, reference))
    return float(np.linalg.norm(value - reference) / np.linalg.norm(reference))


def _diffusers_given(root: Path, dtype: Any, text: tuple[Any, Any], noise: np.ndarray,
                     size: int, steps: int, guidance: float, where: str
                     ) -> tuple[np.ndarray, list[np.ndarray], float]:
    """diffusers' FLUX picture in torch `dtype` from the prompt's embeddings `text` and the
    packed noise, with its latents after every step (packed, float32) and its seconds."""
    import diffusers
    import torch

    unloaded = dict.fromkeys(("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"))
    pipe = diffusers.FluxPipeline.from_pretrained(root, torch_dtype=dtype, **unloaded).to(where)
    pipe.set_progress_bar_config(disable=True)
    latents: list[np.ndarray] = []

    def on_step(pipe: Any, index: int, timestep: Any, tensors: dict[str, Any]
                ) -> dict[str, Any]:
        latents.append(tensors["latents"].float().cpu().numpy())
        return tensors

    start = time.perf_counter()
    out = pipe(prompt_embeds=text[0].to(where, dtype), pooled_prompt_embeds=text[1].to(
        where, dtype), latents=torch.from_numpy(noise).to(where, dtype),
        num_inference_steps=steps, height=size, width=size, guidance_scale=guidance,
        output_type="np", callback_on_step_end=on_step).images[0]
    return _levels(out), latents, time.perf_counter() - start


def _ours_given(root: Path, device: gpucore.Device, text: tuple[Any, Any], noise: np.ndarray,
                size: int, steps: int, guidance: float) -> dict[str, Any]:
    """Our FLUX pictures from `noise` (1, 16, h, w) as _diffusers_given's: "ours" given
    `text`, "ours_own_text"; "text": our T5 and CLIP outputs' relative difference from it."""
    from diffusion.pipelines.flow.flux import FluxPipeline, pack_latents
    from gpustd import Tensor, asarray

    dtype = np.float16 if device.has_f16 else np.float32
    pipe = FluxPipeline.from_pretrained(root, dtype=dtype, device=device)
    states, pooled = (t.numpy() for t in text)
    found: dict[str, Any] = {}

    def given(own_states: Tensor, own_pooled: Tensor) -> tuple[Tensor, Tensor]:
        found["text"] = (_rel(own_states.numpy(), states), _rel(own_pooled.numpy(), pooled))
        return asarray(states, dtype=dtype, device=device), asarray(pooled, dtype=dtype,
                                                                   device=device)

    for name, prior in (("ours", given), ("ours_own_text", None)):
        pipe.prompt_prior = prior
        latents: list[np.ndarray] = []
        start = time.perf_counter()
        out = pipe(PROMPT, height=size, width=size, num_inference_steps=steps,
                   guidance_scale=guidance, latents=noise, output_type="np",
                   callback=lambda done, total, x, into=latents: into.append(pack_latents(x)))
        found[name] = (_levels(out[0]), latents, time.perf_counter() - start)
    return found


def _flux_refs(root: Path, row: dict[str, Any], refs: list[str], setting: Setting,
               steps: int, device: gpucore.Device, cuda: bool) -> list[dict[str, Any]]:
    """BENCH_PICTURES_REFS' rows, one a picture, as the module doc says."""
    import diffusers
    import torch

    from diffusion.pipelines.flow.flux import pack_latents

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    where, size = ("cuda" if cuda else "cpu"), int(row["size"].split("x")[0])
    encoders = diffusers.FluxPipeline.from_pretrained(root, transformer=None,
                                                      torch_dtype=torch.float32).to(where)
    with torch.no_grad():  # T5 states (1, 512, 4096), CLIP's pooled output (1, 768)
        text = tuple(t.cpu() for t in encoders.encode_prompt(PROMPT, device=where)[:2])
    side = size // encoders.vae_scale_factor
    shape = (1, encoders.vae.config.latent_channels, side, side)
    del encoders
    _free(device, cuda)
    noise = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(42)).numpy()
    made = {}
    for ref in refs:
        made[f"diffusers_{ref}"] = _diffusers_given(
            root, getattr(torch, REFS[ref]), text, pack_latents(noise), size, steps,
            float(setting.distilled_cfg_scale or 0), where)
        _free(device, cuda)
    ours = _ours_given(root, device, text, noise, size, steps, setting.distilled_cfg_scale or 0)
    _free(device, cuda)
    t5, clip = ours.pop("text")
    made.update(ours)
    latents32 = made["diffusers_fp32"][1]
    rows = []
    for name, (picture, latents, seconds) in made.items():
        by_step = [_rel(a, b) for a, b in zip(latents, latents32)]
        out = {**row, "picture": name, "picture_std": float(picture.std()), "seconds": seconds,
               "latents_rel_vs_fp32": by_step[-1], "latents_rel_vs_fp32_by_step": by_step,
               "first_step_rel_vs_fp32": _rel(latents[0] - pack_latents(noise),
                                              latents32[0] - pack_latents(noise))}
        for ref in ("fp32", "fp16"):
            if f"diffusers_{ref}" in made:
                out.update(_apart(picture, made[f"diffusers_{ref}"][0], f"_vs_{ref}"))
        if name == "ours_own_text":
            out.update(t5_rel_vs_fp32=t5, clip_pooled_rel_vs_fp32=clip)
        rows.append(out)
        print(json.dumps(out), flush=True)
    return rows


def _models() -> list[str]:
    wanted = [m for m in os.environ.get("BENCH_MODELS", "sdxl,flux").split(",") if m]
    unknown = [m for m in wanted if m not in SETTINGS]
    if unknown:
        raise ValueError(f"BENCH_MODELS names {unknown}; use any of {', '.join(SETTINGS)}")
    return wanted


def _share(step_s: float | None, steps: int, seconds: float) -> float | None:
    return None if step_s is None else step_s * steps / seconds


def run(quick: bool = False) -> dict[str, Any]:
    models, refs = _models(), _refs()
    if refs and models != ["flux"]:
        raise ValueError("BENCH_PICTURES_REFS compares FLUX's pictures only: set "
                         "BENCH_MODELS=flux as well")
    device = gpucore.default_device()
    cuda = _harness.torch_cuda() is not None
    size, repeat = (64, 1) if quick else (1024, 3)
    rows = []
    for name in models:
        setting = SETTINGS[name]
        steps = 2 if quick else setting.steps
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
            start = time.perf_counter()
            root = Path(tmp) / name
            written = setting.write(root, quick, _cold_files._Pool())
            row: dict[str, Any] = {"model": name, "size": f"{size}x{size}", "steps": steps,
                                   "write_s": time.perf_counter() - start,
                                   "folder_gb": written / 1e9}
            print(f"{name}: {written / 1e9:.1f} GB written in {row['write_s']:.1f} s", flush=True)
            if refs:
                rows += _flux_refs(root, row, refs, setting, steps, device, cuda)
                continue
            theirs, timed = _diffusers(root, setting, size, steps, repeat, cuda)
            row.update(timed)
            _free(device, cuda)  # diffusers' pipeline went with its call: its memory too
            print(f"{name}: diffusers {row['diffusers_s']:.2f} s", flush=True)
            mine, timed = _ours(root, setting, size, steps, repeat, device)
            row.update(timed)
            _free(device, cuda)
        row.update(_pictures(mine, theirs, compared=setting.distilled_cfg_scale is not None))
        if "ours_acc16_s" in row:
            row["vs_diffusers_acc16"] = row["diffusers_s"] / row["ours_acc16_s"]
        row.update(vs_diffusers=row["diffusers_s"] / row["ours_s"],
                   ours_steps_share=_share(row["ours_step_s"], steps, row["ours_s"]),
                   diffusers_steps_share=_share(row["diffusers_step_s"], steps,
                                                row["diffusers_s"]))
        rows.append(row)
        print(json.dumps(row), flush=True)  # a row at a time: a cut-off run keeps it
    notes = ("FLUX.1 dev pictures from one float32 noise and diffusers' float32 prompt "
             "embeddings (ours_own_text: from our text encoders); *_vs_fp32, *_vs_fp16: levels "
             "(0..255) apart; latents_rel: relative L2 difference after the last step (_by_step: "
             "each step), first_step_rel: of the first step's increment; TF32 off" if refs else
             "random full-size weights in a diffusers folder loaded by both sides; SDXL base: "
             "30 steps Euler, CFG 7 (diffusers fp16); FLUX.1 dev: 20 steps FlowMatchEuler (ours: "
             "the 'diffusers' sampler), distilled guidance 3.5, 512 T5 tokens (diffusers bf16); "
             "seconds: a picture with text encoding and VAE decode, median of 3 after a warm-up "
             "(diffusers: the faster of cudnn.benchmark off and on, TF32 off); vs_diffusers = "
             "diffusers_s / ours_s; step_s: mean seconds between step callbacks (the first left "
             "out; diffusers' from its warm-up, synchronized); steps_share = step_s x steps / "
             "seconds")
    return {"benchmark": "pictures", "environment": _harness.environment(device),
            "notes": notes + "; diffusers on torch " + ("CUDA" if cuda else "CPU"),
            "columns": REF_COLUMNS if refs else COLUMNS, "rows": rows}

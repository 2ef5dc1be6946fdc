"""Step caching on full-size FLUX.1 dev and SD 3.5 Large: a whole sampling run (28 Euler steps
at 1024x1024; FLUX batch 1 with guidance 3.5, SD 3.5 its batch of 2 CFG rows) uncached and with
each cache, ours beside diffusers' cached transformer (`enable_cache(FirstBlockCacheConfig /
MagCacheConfig)`) in the same process, on the same random weights and inputs as
`python -m bench flux`.

Each run is the loop a pipeline runs: the transformer on the latents at each sigma, the flow
read back to the host, an Euler step there. Rows: the run's wall time, the steps it computed
(the rest reused a cached residual), the time per step, the speedup over the same
implementation uncached, the final latents' relative error against that uncached run (what the
cache costs in quality; with random weights this says little of a real picture's), and ours
against diffusers with the same cache. TeaCache has no diffusers hook, and diffusers' First
Block Cache hook fails on SD3's last block (its text output is None): ours alone there; SD 3.5
runs First Block Cache only (MagCache's and TeaCache's tables are FLUX's).
With random weights the steps a threshold skips are not those of a trained model: the per-step
costs and the speedups at a given skip count are what carries over.

BENCH_CACHE: the caches, comma-separated (default "fbc:0.12,magcache:0.06,teacache:0.4");
BENCH_STEPS: the run's steps (default 28); BENCH_MODELS=flux,sd35 (default flux). `--quick`:
tiny models at 16x16 latents, 6 steps (a smoke run on any adapter).
"""

from __future__ import annotations

import gc
import os
import time
from typing import Any

import numpy as np

import gpucore
import gpustd

from . import _harness
from .flux import FLUX_DEV, SD35_LARGE, TINY_FLUX, TINY_SD35, _host_weights, _inputs, _reference

COLUMNS = ["model", "impl", "cache", "dtype", "steps", "computed", "wall_ms", "ms_per_step",
           "speedup", "rel_err_vs_uncached", "vs_diffusers"]
DEFAULT_CACHES = "fbc:0.12,magcache:0.06,teacache:0.4"


def _sigmas(steps: int) -> np.ndarray:
    return np.append(np.linspace(1.0, 1.0 / steps, steps), 0.0).astype(np.float32)


def _ours_run(name: str, model: Any, x: dict[str, np.ndarray], dtype: np.dtype,
              device: gpucore.Device, spec: Any, steps: int) -> tuple[float, int, np.ndarray]:
    """(wall ms, steps computed, final latents) of one run of ours with cache `spec`."""
    from diffusion.models.step_cache import StepCache

    text = gpustd.asarray(x["encoder_hidden_states"], dtype=dtype, device=device)
    pooled = gpustd.asarray(x["pooled_projections"], dtype=dtype, device=device)
    cache = None if spec is None else StepCache(spec, steps)
    branch = None if cache is None else cache.branch()
    latents = x["hidden_states"].astype(np.float32)
    sigmas = _sigmas(steps)
    if name == "flux":
        rotary = model.rotary(x["txt_ids"], x["img_ids"])

        def call(h: Any, sigma: float) -> Any:
            return model(h, text, pooled, np.array([sigma], np.float32), None, None,
                         x["guidance"], rotary=rotary, cache=branch)
    else:
        def call(h: Any, sigma: float) -> Any:
            return model(h, text, pooled, np.full(len(latents), 1000 * sigma, np.float32),
                         cache=branch)
    device.synchronize()
    start = time.perf_counter()
    for i in range(steps):
        flow = call(gpustd.asarray(latents, dtype=dtype, device=device), float(sigmas[i]))
        latents = latents + (sigmas[i + 1] - sigmas[i]) * flow.numpy().astype(np.float32)
    wall = (time.perf_counter() - start) * 1e3
    return wall, steps if branch is None else branch.computed, latents


def _diffusers_config(name: str, spec: Any, steps: int) -> Any:
    """diffusers' hook config for `spec`, None where it has none (TeaCache; SD3, whose last
    block its First Block Cache hook cannot take)."""
    from diffusers.hooks import FirstBlockCacheConfig, MagCacheConfig
    from diffusers.hooks.mag_cache import FLUX_MAG_RATIOS

    if name != "flux":
        return None
    if spec.kind == "fbc":
        return FirstBlockCacheConfig(threshold=spec.threshold)
    if spec.kind == "magcache":
        return MagCacheConfig(threshold=spec.threshold, num_inference_steps=steps,
                              mag_ratios=FLUX_MAG_RATIOS)
    return None


def _diffusers_run(name: str, reference: Any, x: dict[str, np.ndarray], dev: str, tdtype: Any,
                   config: Any, steps: int, torch: Any) -> tuple[float, int, np.ndarray]:
    """(wall ms, steps computed, final latents) of diffusers' transformer with hook `config`
    (None: uncached); a step counts as computed when its last block's projection ran (a
    skipped block's hook returns before it)."""
    t = {k: torch.from_numpy(np.asarray(v, np.float32)).to(dev) for k, v in x.items()}
    for k in ("encoder_hidden_states", "pooled_projections"):
        t[k] = t[k].to(tdtype)
    computed = [0]
    last = (reference.single_transformer_blocks[-1].proj_out if name == "flux"
            else reference.transformer_blocks[-1].ff)
    hook = last.register_forward_hook(lambda *_: computed.__setitem__(0, computed[0] + 1))
    extra = ({"img_ids": t["img_ids"], "txt_ids": t["txt_ids"], "guidance": t["guidance"]}
             if name == "flux" else {})
    scale = 1.0 if name == "flux" else 1000.0
    if config is not None:
        reference.enable_cache(config)
    latents = t["hidden_states"].clone()
    sigmas = _sigmas(steps)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    try:
        sync()
        start = time.perf_counter()
        with torch.no_grad(), _context(reference, config):
            for i in range(steps):
                flow = reference(hidden_states=latents.to(tdtype),
                                 encoder_hidden_states=t["encoder_hidden_states"],
                                 pooled_projections=t["pooled_projections"],
                                 timestep=torch.full_like(t["timestep"], scale * float(sigmas[i])),
                                 **extra).sample.float()
                latents = latents + float(sigmas[i + 1] - sigmas[i]) * flow
        sync()
        wall = (time.perf_counter() - start) * 1e3
    finally:
        hook.remove()
        if config is not None:
            reference.disable_cache()
    return wall, computed[0], latents.cpu().numpy()


def _context(reference: Any, config: Any) -> Any:
    """diffusers' cache_context("cond") where a hook needs one (SD3's model has no
    CacheMixin, and runs uncached here)."""
    import contextlib

    return contextlib.nullcontext() if config is None else reference.cache_context("cond")


def _rel_err(got: np.ndarray, expected: np.ndarray) -> float:
    got, expected = got.astype(np.float64), expected.astype(np.float64)
    return float(np.abs(got - expected).max() / np.abs(expected).max())


def _rows(name: str, impl: str, dtype: str, runs: dict[str, tuple[float, int, np.ndarray]],
          steps: int) -> list[dict[str, Any]]:
    plain_ms, _, plain = runs["none"]
    return [{"model": name, "impl": impl, "cache": label, "dtype": dtype, "steps": steps,
             "computed": computed, "wall_ms": wall, "ms_per_step": wall / steps,
             "speedup": plain_ms / wall, "rel_err_vs_uncached": _rel_err(out, plain)}
            for label, (wall, computed, out) in runs.items()]


def _one_model(name: str, specs: list[Any], steps: int, quick: bool, device: gpucore.Device,
               cuda: Any) -> list[dict[str, Any]]:
    """The rows of one model: diffusers' runs, then ours, on the same weights."""
    import torch

    from diffusion.models import FluxTransformer2DModel, SD3Transformer2DModel

    config = {"flux": TINY_FLUX if quick else FLUX_DEV,
              "sd35": TINY_SD35 if quick else SD35_LARGE}[name]
    if name != "flux":  # MagCache's and TeaCache's tables are FLUX's
        specs = [spec for spec in specs if spec.kind == "fbc"]
    dev = "cuda" if cuda else "cpu"
    dtype = np.dtype(np.float16 if device.has_f16 else np.float32)
    x = _inputs(name, config, quick)
    # 1. diffusers (bf16 on CUDA, float32 on the CPU), each cache it has on the same weights
    reference = _reference(name, config, dev)
    tdtype = torch.bfloat16 if cuda else torch.float32
    reference.to(tdtype)
    theirs: dict[str, tuple[float, int, np.ndarray]] = {}
    _diffusers_run(name, reference, x, dev, tdtype, None, 1, torch)  # warm-up
    theirs["none"] = _diffusers_run(name, reference, x, dev, tdtype, None, steps, torch)
    for spec in specs:
        hook = _diffusers_config(name, spec, steps)
        if hook is None:
            print(f"diffusers {name} {spec.label}: no hook in diffusers for it", flush=True)
            continue
        theirs[spec.label] = _diffusers_run(name, reference, x, dev, tdtype, hook, steps,
                                            torch)
        print(f"diffusers {name} {spec.label}: {theirs[spec.label][0]:.0f} ms", flush=True)
    weights = _host_weights(reference, dtype)
    del reference
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    # 2. ours on the same weights, each cache
    kind = FluxTransformer2DModel if name == "flux" else SD3Transformer2DModel
    model = kind(dict(config), dtype=dtype, device=device)
    model.load_state_dict(weights, dtype=dtype)
    del weights
    _ours_run(name, model, x, dtype, device, None, 1)  # warm-up: the shaders compiled
    mine = {"none": _ours_run(name, model, x, dtype, device, None, steps)}
    for spec in specs:
        mine[spec.label] = _ours_run(name, model, x, dtype, device, spec, steps)
        print(f"ours {name} {spec.label}: {mine[spec.label][0]:.0f} ms", flush=True)
    del model
    gc.collect()
    device.empty_pool()
    rows = _rows(name, "diffusers", str(tdtype).removeprefix("torch."), theirs, steps)
    ours_rows = _rows(name, "ours", dtype.name, mine, steps)
    for row in ours_rows:
        if row["cache"] in theirs:
            row["vs_diffusers"] = theirs[row["cache"]][0] / row["wall_ms"]
    return rows + ours_rows


def run(quick: bool = False) -> dict[str, Any]:
    from diffusion.models.step_cache import CacheSpec

    specs = [CacheSpec.parse(s) for s in
             os.environ.get("BENCH_CACHE", DEFAULT_CACHES).split(",") if s.strip()]
    steps = 6 if quick else int(os.environ.get("BENCH_STEPS", "28"))
    models = [m for m in os.environ.get("BENCH_MODELS", "flux").split(",") if m]
    unknown = sorted(set(models) - {"flux", "sd35"})
    if unknown:
        raise ValueError(f"BENCH_MODELS names {unknown}; use flux and/or sd35, comma-separated")
    device = gpucore.default_device()
    cuda = _harness.torch_cuda()
    rows = []
    for name in models:
        rows += _one_model(name, specs, steps, quick, device, cuda)
    return {
        "benchmark": "flux_cache",
        "environment": _harness.environment(device),
        "notes": f"{steps} Euler steps from sigma 1 at 1024x1024 (FLUX.1 dev: 4096 image + "
                 "512 text tokens, batch 1, guidance 3.5; SD 3.5 Large: 4096 + 333 tokens, "
                 "batch 2 as CFG runs it; --quick: tiny models at 16x16 latents), the flow read "
                 "back each step; random weights as bench flux's (what a threshold skips "
                 "differs from a trained model's); ours float16 (float32 without shader-f16) "
                 "eager, diffusers bf16 on CUDA (float32 on the CPU) with its cache hooks in "
                 "cache_context('cond') (none for TeaCache, nor for SD3, whose last block its "
                 "First Block Cache hook cannot take); computed = steps whose blocks all ran; "
                 "speedup = the same implementation's uncached wall_ms / this row's; "
                 "rel_err_vs_uncached = max|final latents - uncached| / max|uncached|; "
                 "vs_diffusers = diffusers' wall_ms with the same cache / ours",
        "columns": COLUMNS,
        "rows": rows,
    }

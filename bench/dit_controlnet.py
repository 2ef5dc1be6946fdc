"""FLUX.1 dev + ControlNet: one transformer step at 1024x1024 with an InstantX Union-sized
`FluxControlNetModel` (5 double, 10 single blocks, 10 control modes), ours beside diffusers
bf16 in one process; then each model preprocessor's map at 512x512 and 1024x1024, ours beside
controlnet_aux's network on torch's GPU (bench/_annotator_refs.py).

The step is what FluxControlNetPipeline runs once per step with one unit (batch 1, no CFG
pass, 4096 patches, 512 T5 tokens, guidance 3.5): the ControlNet on the latents, the control
image's packed latents and the mode, then the transformer with its block residuals. As bench
dit_families: torch draws both models' weights once on its device in bf16 (normal(0, 0.02);
norm scales 1 + normal(0, 0.02); the zero-initialized control linears drawn too, so the
residuals matter), times the reference, hands the weights to the host as float16 one tensor
at a time and frees its copy before ours loads them (one copy of the 23 GB at a time).

BENCH_PREPROCESSORS picks preprocessors, comma-separated (default: all twelve;
"none" skips them); BENCH_STEP=none skips the FLUX step (run the two in separate processes
where a machine's time is short); `--quick`: a tiny transformer and ControlNet,
lineart_realistic only, on a 32x32 picture (a smoke run on any adapter).

    python -m bench dit_controlnet --json bench/results/dit_controlnet.json
    python -m bench.dit_controlnet --vendor DIR    # copy controlnet_aux's parts for a machine
                                                   # without it; run there with
                                                   # BENCH_CONTROLNET_AUX=DIR
"""

from __future__ import annotations

import gc
import json
import os
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

import gpucore
import gpustd

from . import _annotator_refs, _harness
from . import dit_families as _dit
from ._dit_flux_qwen import _positions
from ._dit_models import FLUX_DEV
from .sdxl import _PeakMemory, _settled_use

GIB = float(1 << 30)
COLUMNS = ["work", "impl", "dtype", "rel_err", "gpu_ms", "wall_ms", "peak_gib",
           "ours_eager_wall_ms", "ours_wall_ms", "torch_wall_ms", "vs_torch", "error"]
# InstantX/FLUX.1-dev-Controlnet-Union, config.json
UNION: dict[str, Any] = dict(FLUX_DEV, num_layers=5, num_single_layers=10, num_mode=10)
_TINY = dict(num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
             joint_attention_dim=40, pooled_projection_dim=24, axes_dims_rope=(4, 6, 6))
QUICK_PREPROCESSORS = ("lineart_realistic",)


def _inputs(quick: bool, config: dict[str, Any]) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    side, text = (8, 12) if quick else (64, 512)
    txt_ids, img_ids = _positions(text, side, side, 3)
    return {"latents": rng.standard_normal((1, side * side, 64)),
            "control": rng.standard_normal((1, side * side, 64)),
            "text": rng.standard_normal((1, text, config["joint_attention_dim"])),
            "pooled": rng.standard_normal((1, config["pooled_projection_dim"])),
            "t": np.array([0.7]), "guidance": np.array([3.5]), "mode": 2,
            "txt_ids": txt_ids, "img_ids": img_ids}


def _torch_step(transformer: Any, controlnet: Any, x: dict[str, Any]) -> Any:
    """FluxControlNetPipeline's calls for one step."""
    import torch

    common = dict(timestep=x["t"], guidance=x["guidance"], pooled_projections=x["pooled"],
                  encoder_hidden_states=x["text"], txt_ids=x["txt_ids"], img_ids=x["img_ids"],
                  return_dict=False)
    mode = torch.full((1, 1), x["mode"], dtype=torch.long, device=x["t"].device)
    double, single = controlnet(hidden_states=x["latents"], controlnet_cond=x["control"],
                                controlnet_mode=mode, conditioning_scale=1.0, **common)
    return transformer(hidden_states=x["latents"], controlnet_block_samples=double,
                       controlnet_single_block_samples=single, **common)[0]


def _draw(config: dict[str, Any], kind: str, dev: str) -> Any:
    maker = types.SimpleNamespace(reference=lambda d, t, c: getattr(d, kind)(**c))
    return _dit._reference(maker, config, dev)  # type: ignore[arg-type]


def _flux_rows(quick: bool, device: gpucore.Device, cuda: Any) -> list[dict[str, Any]]:
    import torch

    from diffusion.models.flux import FluxTransformer2DModel
    from diffusion.models.flux_controlnet import FluxControlNetModel

    t_config = dict(FLUX_DEV, **_TINY) if quick else dict(FLUX_DEV)
    c_config = dict(UNION, **_TINY) if quick else dict(UNION)
    if quick:
        c_config["num_mode"] = 3
    repeat = 1 if quick else 3
    dtype = np.dtype(np.float16 if device.has_f16 else np.float32)
    dev = "cuda" if cuda else "cpu"
    tdtype = torch.bfloat16 if cuda else torch.float32
    refs = {"transformer": _draw(t_config, "FluxTransformer2DModel", dev),
            "controlnet": _draw(c_config, "FluxControlNetModel", dev)}
    for ref in refs.values():
        ref.to(tdtype)
    x = _inputs(quick, t_config)
    exact = ("t", "guidance", "txt_ids", "img_ids")  # float32, as the pipeline passes them
    tx = {k: v if k == "mode" else torch.from_numpy(np.asarray(v, np.float32)).to(
        dev, torch.float32 if k in exact else tdtype) for k, v in x.items()}
    rows: list[dict[str, Any]] = []
    work = f"FLUX.1 dev + Union ControlNet step {'tiny' if quick else '1024x1024'}"
    with torch.no_grad():
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        expected = _torch_step(refs["transformer"], refs["controlnet"], tx).float().cpu().numpy()
        row: dict[str, Any] = {"work": work, "impl": "diffusers", "dtype": str(tdtype)[6:]}
        if cuda:
            call = lambda: _torch_step(refs["transformer"], refs["controlnet"], tx)  # noqa: E731
            row.update(gpu_ms=_harness.torch_cuda_ms(call, warmup=1, repeat=repeat),
                       wall_ms=_harness.torch_wall_ms(call, torch, repeat),
                       peak_gib=torch.cuda.max_memory_allocated() / GIB)
            print(f"diffusers step: {row['wall_ms']:.1f} ms", flush=True)
        rows.append(row)
    wdtype = torch.float16 if dtype == np.float16 else torch.float32
    weights = {}
    for name in list(refs):  # one copy at a time: each model's tensors leave torch's device
        weights[name] = {k: v.detach().to(wdtype).cpu().numpy()
                         for k, v in refs.pop(name).state_dict().items()}
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    tx.clear()
    device.empty_pool()
    settled = _settled_use(device, cuda) if cuda else float("nan")
    device.reset_peak_memory()
    base = device.memory_stats().allocated
    transformer = FluxTransformer2DModel(t_config, dtype=dtype, device=device)
    transformer.load_state_dict(weights.pop("transformer"), dtype=dtype)
    controlnet = FluxControlNetModel(c_config, dtype=dtype, device=device)
    controlnet.load_state_dict(weights.pop("controlnet"), dtype=dtype)
    gc.collect()
    latents, control, text, pooled = (gpustd.asarray(x[k], dtype=dtype, device=device)
                                      for k in ("latents", "control", "text", "pooled"))
    text_length = x["text"].shape[1]
    cn_tables = controlnet.rotary(text_length, x["img_ids"])  # once per picture size
    tables = transformer.rotary(x["txt_ids"], x["img_ids"])

    def step() -> Any:
        residuals = controlnet(latents, control, text, pooled, x["t"], x["guidance"],
                               rotary=cn_tables, mode=x["mode"])
        return transformer(latents, text, pooled, x["t"], x["img_ids"], x["txt_ids"],
                           x["guidance"], rotary=tables, control=residuals)

    device.reset_peak_memory()
    with _PeakMemory(cuda, settled) as driver:
        got = np.asarray(step().numpy(), np.float64).reshape(expected.shape)
    peak = device.memory_stats().peak_allocated
    timing = _harness.ours_ms(step, device, warmup=1, repeat=repeat)
    ours = {"work": work, "impl": "ours", "dtype": dtype.name, **timing,
            "peak_gib": (peak - base) / GIB, "driver_step_peak_gib": driver.peak,
            "rel_err": float(np.abs(got - expected).max() / np.abs(expected).max())}
    if "wall_ms" in rows[0]:
        ours["vs_torch"] = rows[0]["wall_ms"] / ours["wall_ms"]
    return [*rows, ours]  # its models freed by the caller's collect


def run(quick: bool = False) -> dict[str, Any]:
    device = gpucore.default_device()
    cuda = _harness.torch_cuda()
    default = QUICK_PREPROCESSORS if quick else _annotator_refs.MODULES
    wanted = tuple(m for m in os.environ.get("BENCH_PREPROCESSORS", ",".join(default))
                   .split(",") if m and m != "none")
    unknown = sorted(set(wanted) - set(_annotator_refs.MODULES))
    if unknown:
        raise ValueError(f"BENCH_PREPROCESSORS names {unknown}; use any of "
                         f"{', '.join(_annotator_refs.MODULES)} (or none), comma-separated")
    start = time.perf_counter()
    try:
        rows = [] if os.environ.get("BENCH_STEP") == "none" else _flux_rows(quick, device, cuda)
    except Exception as exc:  # out of memory: the preprocessors still run
        rows = [{"work": "FLUX.1 dev + Union ControlNet step", "impl": "ours",
                 "error": f"{type(exc).__name__}: {str(exc)[:300]}"}]
        gc.collect()
        device.empty_pool()
        if cuda:
            cuda.cuda.empty_cache()
    gc.collect()
    device.empty_pool()
    print(json.dumps(rows, default=float), f"({time.perf_counter() - start:.0f} s)", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for row in _annotator_refs.rows((32,) if quick else (512, 1024), wanted, device,
                                        cuda, 1 if quick else 5, Path(folder)):
            rows.append(dict(row, impl="ours vs controlnet_aux"))
    return {
        "benchmark": "dit_controlnet",
        "environment": _harness.environment(device),
        "notes": "FLUX step: FLUX.1 dev's transformer (19 + 38 blocks) with an InstantX "
                 "Union-sized FluxControlNetModel (5 + 10 blocks, mode 2) at 1024x1024, batch "
                 "1, 512 T5 tokens, guidance 3.5, as FluxControlNetPipeline calls them; random "
                 "bf16 weights drawn by torch shared by both rows; ours float16 (float32 "
                 "without shader-f16), eager, rotary tables made once per picture size; "
                 "rel_err = max|ours - diffusers| / max|diffusers|; wall_ms medians; vs_torch "
                 "= diffusers wall_ms / ours (above 1: we are faster); peak_gib: "
                 "torch.cuda.max_memory_allocated, ours Device.memory_stats peak above the "
                 "level before loading, weights included. Preprocessors: ours_wall_ms = "
                 "preprocess(module, picture) (upload, network, map read back as uint8), "
                 "its network replayed (recorded once per picture size); ours_eager_wall_ms "
                 "the same with every op dispatched from Python (annotators.REPLAY off); "
                 "replay_equal: both maps bitwise equal; "
                 "torch_wall_ms = controlnet_aux's network (fp32) on the same random weights "
                 "(saved in the annotator file layout; depth_midas, normal_midas, "
                 "depth_anything_v2: transformers' DPT-Hybrid and Depth Anything V2 Small, "
                 "bench/_depth_refs.py) on a picture already scaled as its "
                 "detector scales it, output read back (openpose: Body's whole call, its "
                 "peak search included; mlsd: the network at 512x512 as pred_lines); maps' "
                 "equality is tests/diffusion/preprocessors' business. "
                 "openpose rows: a built body network and a picture of 3 people "
                 "(bench/_pose_people.py), 18 parts each found by both.",
        "columns": COLUMNS,
        "rows": rows,
    }


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--vendor":
        print(f"copied to {_annotator_refs.vendor(sys.argv[2])}; run with "
              f"{_annotator_refs.ENV_VAR}={sys.argv[2]}")
    else:
        sys.exit("usage: python -m bench.dit_controlnet --vendor DIR "
                 "(the benchmark itself: python -m bench dit_controlnet)")

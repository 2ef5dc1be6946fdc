"""Whose error is HiDream's 0.61? HiDream-I1-Full's transformer step (bench/_dit_hidream.py's
1024x1024 row, random bf16 weights) run by diffusers in bfloat16 and in float32 (no TF32),
each of its 48 gates' top-2 choices recorded, then ours in float32 on the same weights and
inputs (both rounded to bf16 first, so only the arithmetic differs).

bench dit_families compares ours with diffusers bf16, the baseline users run; for HiDream
that row reads 0.61 where every other family reads <= 0.02. A mixture of experts routes each
token to the experts its gate scores highest: bf16's rounding of the scores flips the choice
for tokens whose top scores are close, and a flipped token's feed-forward output differs by
its whole size, growing through the 48 blocks. This benchmark separates the two: the
reference's own distance from itself in float32 (`ref_bf16_vs_f32`), the fraction of tokens
whose top-2 set differs at each gate (`route_flips`), and ours float32 against the float32
reference (`rel_err`). --quick: the tiny config on the CPU.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import numpy as np

import gpucore

from . import _harness
from . import dit_families as _families
from . import zimage as _zimage
from ._dit_models import TINY

COLUMNS = ["impl", "dtype", "rel_err", "mean_rel_err", "route_flips_max", "seconds"]


def _rel(got: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """max|got - expected| / max|expected| and the same of the means."""
    diff = np.abs(got - expected)
    return (float(diff.max() / np.abs(expected).max()),
            float(diff.mean() / np.abs(expected).mean()))


def run(quick: bool = False) -> dict[str, Any]:
    import torch

    cuda = _harness.torch_cuda() is not None
    dev = "cuda" if cuda else "cpu"
    if cuda:  # float32 means float32 here, not TF32's 10-bit products
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    model = _families._model("hidream")
    config = TINY["hidream"] if quick else model.config
    ref = _families._reference(model, config, dev)
    x = _families._inputs("hidream", config, quick)
    for key, value in list(x.items()):  # both sides read the bf16 run's inputs
        if key not in ("t", "rows"):
            rounded = torch.from_numpy(np.asarray(value, np.float32)).to(torch.bfloat16)
            x[key] = rounded.float().numpy().astype(np.float64)
    gates = [m for m in ref.modules() if type(m).__name__ == "MoEGate"]
    chosen: dict[str, list[Any]] = {}

    def reference(tag: str, dtype: Any) -> np.ndarray:
        def keep(module: Any, args: Any, out: Any) -> None:
            chosen.setdefault(tag, []).append(out[0].detach().sort(-1).values.cpu())

        hooks = [gate.register_forward_hook(keep) for gate in gates]
        on_torch = _families._on_torch({k: v for k, v in x.items() if k != "rows"}, dtype, dev)
        try:
            with torch.no_grad():
                out = model.torch_call(ref, {**x, "torch": on_torch})
        finally:
            for hook in hooks:
                hook.remove()
        return out.float().cpu().numpy().astype(np.float64)

    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    half = reference("bf16", torch.bfloat16)
    ref = _zimage._cast(ref, torch.float32)
    full = reference("f32", torch.float32)
    flips = [float((a != b).any(-1).float().mean())
             for a, b in zip(chosen["bf16"], chosen["f32"])]
    rel, mean = _rel(half, full)
    rows.append({"impl": "reference bf16 vs reference float32", "dtype": "bfloat16",
                 "rel_err": rel, "mean_rel_err": mean, "route_flips": flips,
                 "route_flips_max": max(flips), "seconds": time.perf_counter() - start})
    weights = {k: v.detach().float().cpu().numpy() for k, v in ref.state_dict().items()
               if not k.endswith("inv_freq")}
    ref = None  # torch's copy freed before ours loads
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    device = gpucore.default_device()
    start = time.perf_counter()
    ours = model.ours(dict(config), np.dtype(np.float32), device)
    ours.load_state_dict(weights, dtype=np.float32)
    del weights
    got = model.ours_call(ours, x, np.dtype(np.float32)).numpy()
    got = np.asarray(got, np.float64).reshape(full.shape)
    rel, mean = _rel(got, full)
    rows.append({"impl": "ours vs reference float32", "dtype": "float32", "rel_err": rel,
                 "mean_rel_err": mean, "vs_bf16_rel_err": _rel(got, half)[0],
                 "seconds": time.perf_counter() - start})
    ours = None
    gc.collect()
    device.empty_pool()
    return {
        "benchmark": "hidream_routing",
        "environment": _harness.environment(device),
        "notes": "HiDream-I1-Full's transformer step at 1024x1024 (--quick: the tiny config) "
                 "on random bf16 weights: diffusers in bfloat16 against diffusers in float32 "
                 "(TF32 off), route_flips = the fraction of tokens whose top-2 experts differ "
                 "at each of the gates, then ours float32 against diffusers float32 "
                 "(vs_bf16_rel_err: against the bf16 run, as dit_families' row reads it); "
                 "rel_err = max|a - b| / max|b|, mean_rel_err the same of the means",
        "columns": COLUMNS,
        "rows": rows,
    }

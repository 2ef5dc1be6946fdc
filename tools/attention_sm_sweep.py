"""Tuning tool: the matrix-unit flash attention (gpustd/nn/_attention_subgroup_matrix.py)
checked against torch float64 on ragged sizes, then every tile plan that fits timed beside
choose_plan's pick, the present (portable) f16 kernel and torch's scaled_dot_product_attention
fp16 on the same GPU, in one process. Needs Dawn with subgroup matrices and torch CUDA:

    GPUCORE_RUNTIME=dawn python -m tools.attention_sm_sweep --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import math
import re
from collections.abc import Iterator
from typing import Any

import numpy as np

import gpucore
from bench import _harness
from gpustd import Tensor, nn
from gpustd.nn import _attention_subgroup_matrix as sm

RAGGED = [(1, 2, 77, 77, 40), (2, 3, 100, 77, 64), (1, 2, 333, 130, 80), (2, 2, 97, 45, 160),
          (1, 1, 17, 1, 10), (1, 3, 130, 1000, 64), (1, 2, 300, 333, 128),
          (2, 1, 77, 1000, 128), (1, 3, 301, 290, 96), (1, 2, 301, 290, 256),
          (2, 1, 77, 530, 256)]
# (name, (B, H, Lq, Lk, D)): the SD 1.5 and SDXL UNets' attention at 512 / 1024 pixels, FLUX's
# joint attention at 1024 pixels (4096 image and 512 text tokens), SD 3.5 Large's (333 text),
# Z-Image's and Wan 2.1 1.3B's self-attention at 480x832, 81 frames (one CFG half)
SHAPES = [("sd15 self 4096 d40", (2, 8, 4096, 4096, 40)),
          ("sd15 cross 77 d40", (2, 8, 4096, 77, 40)),
          ("sd15 self 1024 d80", (2, 8, 1024, 1024, 80)),
          ("sd15 self 256 d160", (2, 8, 256, 256, 160)),
          ("sdxl self 4096 d64", (2, 10, 4096, 4096, 64)),
          ("sdxl self 1024 d64", (2, 20, 1024, 1024, 64)),
          ("sdxl cross 77 d64", (2, 10, 4096, 77, 64)),
          ("flux joint 4608 d128", (1, 24, 4608, 4608, 128)),
          ("sd35 joint 4429 d64", (1, 38, 4429, 4429, 64)),
          ("zimage joint 4224 d128", (1, 30, 4224, 4224, 128)),
          ("wan self 32760 d128", (1, 12, 32760, 32760, 128)),
          # Lumina 2's joint attention at 1024 pixels (4096 patches and ~92 caption tokens)
          ("lumina2 joint 4188 d96", (1, 24, 4188, 4188, 96)),
          # AuraFlow's and Ideogram 4's 256-wide heads at 1024 pixels (4096 patches, 256 text
          # and 8 register tokens; ~4096 + 300 for Ideogram 4)
          ("auraflow joint 4360 d256", (1, 12, 4360, 4360, 256)),
          ("ideogram4 joint 4396 d256", (1, 18, 4396, 4396, 256))]
# (fq, fk, sg, prefetch, rotate, regs[, lean]): see SMPlan. Slower on an H100 (2026-11-24,
# attention-sm-prefetch-dawn-h100.json): 1x1x4, 1x1x8, 2x2x4 (without the score registers).
VARIANTS = [(1, 2, 8, False, False, False), (1, 2, 8, True, True, True),
            (1, 2, 4, True, False, True), (1, 2, 4, True, True, True),
            (1, 1, 8, True, True, True), (1, 4, 4, True, False, True),
            (1, 2, 2, True, False, True), (2, 2, 2, True, False, True),
            (2, 2, 4, True, False, True), (1, 2, 4, True, False, True, True),
            (1, 2, 4, True, True, True, True), (1, 1, 8, True, True, True, True),
            (1, 2, 8, True, True, True, True)]
# with a split (SMPlan.split: subgroups sharing a row group), for head dim 128
SPLIT_VARIANTS = ["1x2x8psl-c2", "1x2x16psl-c2", "2x2x8psl-c2", "2x2x4psl-c2", "1x2x8sl-c2",
                  "1x2x16sl-c2", "2x2x8sl-c2", "1x4x8psl-c4", "1x2x12psl-c2", "1x2x16ps-c2"]
_NAME = re.compile(r"(\d+)x(\d+)x(\d+)(p?)(r?)(s?)(l?)(u?)(?:-c(\d+))?(?:-h(\d+))?")


def plan_from_name(name: str, d: int) -> sm.SMPlan:
    """The plan `SMPlan.name` names, at head dim d ("1x2x4psl", "1x2x16psl-c2-h15")."""
    match = _NAME.fullmatch(name)
    if match is None:
        raise SystemExit(f"{name!r} is no plan name: FQxFKxSG, then p r s l u, then -cSPLIT, "
                         "then -hHEADROOM")
    fq, fk, sg, prefetch, rotate, regs, lean, runs, split, headroom = match.groups()
    return sm.SMPlan(d, int(fq), int(fk), int(sg), prefetch=bool(prefetch), rotate=bool(rotate),
                     regs=bool(regs), lean=bool(lean), split=int(split or 1), runs=bool(runs),
                     headroom=int(headroom or 8))


def plans(d: int, device: gpucore.Device, names: list[str] | None = None) -> list[sm.SMPlan]:
    """The plans that fit at head dim d: `names`, or VARIANTS and SPLIT_VARIANTS."""
    budget = device.limits["max-compute-workgroup-storage-size"]
    found = [] if names else [sm.SMPlan(d, *variant) for variant in VARIANTS]
    for name in names or SPLIT_VARIANTS:
        with contextlib.suppress(ValueError):  # a split that does not divide this head dim
            found.append(plan_from_name(name, d))
    return [p for p in found if p.shared_bytes() <= budget]


@contextlib.contextmanager
def portable() -> Iterator[None]:
    """gpustd.nn.attention without the matrix-unit route: the present kernel."""
    saved = sm.supports
    sm.supports = lambda *args: False  # type: ignore[assignment]
    try:
        yield
    finally:
        sm.supports = saved  # type: ignore[assignment]


FLAT = False  # --flat: keys of one scale, no ramp
PORTABLE = True  # --no-portable: leave the present kernel out of the timings


def inputs(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, ...]:
    """Random f16 q, k, v; the keys' scale grows along the sequence (0.5 to 2.5), so rows'
    maxima rise on later tiles (the rescale path), unless FLAT (1.5 throughout)."""
    b, h, lq, lk, d = shape
    rng = np.random.default_rng(seed)
    q = (1.5 * rng.standard_normal((b, h, lq, d))).astype(np.float16)
    ramp = np.full(lk, 1.5) if FLAT else np.linspace(0.5, 2.5, lk)
    k = (ramp[:, None] * rng.standard_normal((b, h, lk, d))).astype(np.float16)
    v = rng.standard_normal((b, h, lk, d)).astype(np.float16)
    return q, k, v


def run_plan(tensors: tuple[Tensor, ...], shape: tuple[int, ...], plan: sm.SMPlan | None
             ) -> Tensor:
    """One call on the matrix units with `plan` (None: choose_plan's)."""
    q, k, v = tensors
    _, h, lq, lk, d = shape
    out = Tensor.empty(q.shape, np.float16, device=q.device)
    strides = ((h * lq * d, lq * d, d), (h * lk * d, lk * d, d), (h * lk * d, lk * d, d),
               (h * lq * d, lq * d, d))
    sm.record_attention_sm(q, k, v, out, shape=shape, strides=strides,
                           scale=1 / math.sqrt(d), plan=plan)
    return out


def check(device: gpucore.Device, torch: Any, shapes: list[tuple[int, ...]],
          names: list[str] | None = None) -> list[dict]:
    """Max error / max |reference| of every plan (and of torch fp16) against torch float64."""
    rows = []
    for shape in shapes:
        q, k, v = inputs(shape, seed=sum(shape))
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        t64 = [torch.from_numpy(x).to(dev, torch.float64) for x in (q, k, v)]
        ref = torch.nn.functional.scaled_dot_product_attention(*t64).cpu().numpy()
        norm = np.abs(ref).max()
        row: dict[str, Any] = {"shape": "x".join(map(str, shape))}
        if dev == "cuda":
            t16 = [x.half() for x in t64]
            got = torch.nn.functional.scaled_dot_product_attention(*t16).double().cpu().numpy()
            row["torch_fp16"] = float(np.abs(got - ref).max() / norm)
        tensors = tuple(Tensor.from_numpy(x, device=device) for x in (q, k, v))
        got = nn.attention(*tensors).numpy()
        row["ours"] = float(np.abs(got - ref).max() / norm)
        for plan in plans(shape[4], device, names):
            got = run_plan(tensors, shape, plan).numpy()
            row[plan.name] = float(np.abs(got - ref).max() / norm)
        print(row, flush=True)
        rows.append(row)
    return rows


def time_shape(device: gpucore.Device, torch: Any, name: str, shape: tuple[int, ...],
               repeat: int, names: list[str] | None = None) -> list[dict]:
    """GPU and wall medians of the present kernel, every plan and torch SDPA fp16."""
    b, h, lq, lk, d = shape
    q, k, v = inputs(shape, seed=1)
    tensors = tuple(Tensor.from_numpy(x, device=device) for x in (q, k, v))
    flops = 4 * b * h * lq * lk * d
    pick = sm.choose_plan(d, lq, lk, b * h, device)
    rows = []
    if PORTABLE:
        with portable():
            t = _harness.ours_ms(lambda: nn.attention(*tensors), device, repeat=repeat)
        rows.append({"shape": name, "variant": "portable", **t})
    for plan in plans(d, device, names):
        t = _harness.ours_ms(lambda p=plan: run_plan(tensors, shape, p), device, repeat=repeat)
        label = plan.name + ("*" if plan == pick else "")
        rows.append({"shape": name, "variant": label, **t})
    t16 = [torch.from_numpy(x).cuda() for x in (q, k, v)]

    def sdpa() -> Any:
        return torch.nn.functional.scaled_dot_product_attention(*t16)

    rows.append({"shape": name, "variant": "torch sdpa fp16",
                 "gpu_ms": _harness.torch_cuda_ms(sdpa, repeat=repeat),
                 "wall_ms": _harness.torch_wall_ms(sdpa, torch, repeat)})
    for row in rows:
        row["tflops"] = flops / row["gpu_ms"] / 1e9
        print(row, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--no-timing", action="store_true", help="correctness only")
    parser.add_argument("--only", default="", help="time only the shapes whose name has this "
                        "(or one of these, comma-separated)")
    parser.add_argument("--plans", default="", help="check and time only these plans, by name "
                        "(comma-separated, e.g. 1x2x4psl,1x2x16psl-c2) beside choose_plan's")
    parser.add_argument("--check-dims", default="", help="check only the ragged shapes of "
                        "these head dims (comma-separated; 'none': no checks)")
    parser.add_argument("--flat", action="store_true", help="keys of one scale (rows' maxima "
                        "rarely rise after the first tiles) instead of a ramp along the sequence")
    parser.add_argument("--no-portable", action="store_true", help="leave the portable "
                        "kernel out of the timings (seconds a call at Wan's 32,760 tokens)")
    args = parser.parse_args()
    global FLAT, PORTABLE
    FLAT, PORTABLE = args.flat, not args.no_portable
    names = [n for n in args.plans.split(",") if n] or None
    device = gpucore.Device.auto()
    if not sm.available(device):
        raise SystemExit(f"{device.info.label} has no f16 subgroup matrices: run on a GPU "
                         "with GPUCORE_RUNTIME=dawn")
    import torch

    only = args.only.split(",")
    dims = args.check_dims.split(",") if args.check_dims else None
    ragged = [s for s in RAGGED if dims is None or str(s[4]) in dims]
    result: dict[str, Any] = {"environment": _harness.environment(device), "flat": FLAT,
                              "errors": check(device, torch, ragged, names)}
    if not args.no_timing:
        result["timings"] = [row for name, shape in SHAPES if any(o in name for o in only)
                             for row in time_shape(device, torch, name, shape, args.repeat,
                                                   names)]
    if args.json:
        _harness.write_json(args.json, result)
    print("relative errors against torch float64 (max |err| / max |ref|)")
    columns = sorted({c for r in result["errors"] for c in r} - {"shape"})
    _harness.print_table(result["errors"], ["shape", *columns])
    if not args.no_timing:
        best: dict[str, float] = {}
        for r in result["timings"]:
            if r["variant"] == "torch sdpa fp16":
                best[r["shape"]] = r["wall_ms"]
        for r in result["timings"]:
            r["wall_vs_torch"] = r["wall_ms"] / best[r["shape"]]
        _harness.print_table(result["timings"], ["shape", "variant", "gpu_ms", "wall_ms",
                                                 "tflops", "wall_vs_torch"])


if __name__ == "__main__":
    main()

"""Lab tool: where the f16 matrix-unit flash attention's time goes
(gpustd/nn/_attention_subgroup_matrix.py), cut as bench/gemm_ceiling.py cuts the GEMM, beside
torch's scaled_dot_product_attention fp16 on the same GPU. Needs Dawn with subgroup matrices
and torch CUDA:

    GPUCORE_RUNTIME=dawn python -m tools.attention_ceiling --json out.json

Per shape, choose_plan's plan (checked against torch float64 first) and the same kernel with
parts of its WGSL taken out, each cut on top of the one before:
`no_softmax`: the lanes' softmax (reads of S, row max, exp2, writes of P) gone, the matrix
products and the S stores and P loads kept; `no_loads`: also no global loads of K and V (the
staging stores still write); `no_staging`: also no staging stores; `no_barriers`: also the
loop's barriers gone: what is left is the matrix work and its workgroup-memory traffic.
Then SDPA. The cut kernels compute garbage; only their time means something.
"""

from __future__ import annotations

import argparse
import contextlib
import re
from collections.abc import Iterator
from typing import Any

import numpy as np

import gpucore
from bench import _harness
from gpucore import Kernel
from gpustd import Tensor
from gpustd.nn import _attention_subgroup_matrix as sm
from tools.attention_sm_sweep import RAGGED, inputs, plan_from_name, run_plan

SHAPES = [("sdxl self 4096 d64", (2, 10, 4096, 4096, 64)),
          ("sd15 self 4096 d40", (2, 8, 4096, 4096, 40)),
          ("sdxl self 1024 d64", (2, 20, 1024, 1024, 64)),
          ("flux joint 4608 d128", (1, 24, 4608, 4608, 128))]
CUTS = ("shipped", "no_softmax", "no_loads", "no_staging", "no_barriers")


def _without_barriers(text: str) -> str:
    """The main loop's barriers out (the staging of q before it keeps its own), and the
    rescale decision made a constant (workgroupUniformLoad is a barrier too)."""
    head, loop = text.split("  for (var t = 0u;", 1)
    loop = loop.replace("    workgroupBarrier();\n", "")
    loop = re.sub(r"workgroupUniformLoad\(&rescale\[\w+\]\)", "0u", loop)
    return head + "  for (var t = 0u;" + loop


def _cut_source(cut: str, plan: sm.SMPlan) -> str:
    text = sm.source(plan)  # with _cut's pieces in place
    return _without_barriers(text) if CUTS.index(cut) >= 4 else text


@contextlib.contextmanager
def _cut(cut: str) -> Iterator[None]:
    """sm's WGSL pieces replaced for `cut` (and every cut before it in CUTS)."""
    level = CUTS.index(cut)
    saved = (sm.softmax_in_registers, sm.fetch_rows, sm._kernel, sm.lean_softmax)

    def fetch(*args: Any) -> tuple[list[str], list[str], list[str]]:
        decls, _, stores = saved[1](*args)
        return decls, [], [] if level >= 3 else stores

    def kernel(plan: sm.SMPlan) -> Kernel:  # generated here, inside the cut, and kept
        return Kernel.generated(f"tools/attention_ceiling/{cut}", _cut_source, cut, plan)

    if level >= 1:
        sm.softmax_in_registers = lambda plan, i: ""  # type: ignore[assignment]
        sm.lean_softmax = lambda plan, i: ""  # type: ignore[assignment]
        sm._kernel = kernel  # type: ignore[assignment]
    if level >= 2:
        sm.fetch_rows = fetch  # type: ignore[assignment]
    try:
        yield
    finally:
        (sm.softmax_in_registers, sm.fetch_rows, sm._kernel,  # type: ignore[assignment]
         sm.lean_softmax) = saved


def errors(device: gpucore.Device, torch: Any) -> list[dict[str, Any]]:
    """Max error / max |reference| against torch float64 of choose_plan's plan on the
    sweep's ragged shapes and one full-size one: the kernel the cuts start from is right."""
    rows = []
    for shape in [*RAGGED, (1, 2, 1024, 1024, 64)]:
        q, k, v = inputs(shape, seed=sum(shape))
        t64 = [torch.from_numpy(x).cuda().double() for x in (q, k, v)]
        ref = torch.nn.functional.scaled_dot_product_attention(*t64).cpu().numpy()
        tensors = tuple(Tensor.from_numpy(x, device=device) for x in (q, k, v))
        got = run_plan(tensors, shape, None).numpy()
        row = {"shape": "x".join(map(str, shape)),
               "chosen": float(np.abs(got - ref).max() / np.abs(ref).max())}
        print(row, flush=True)
        rows.append(row)
    return rows


def timings(device: gpucore.Device, torch: Any, name: str, shape: tuple[int, ...],
            plan_name: str = "") -> list[dict[str, Any]]:
    b, h, lq, lk, d = shape
    q, k, v = inputs(shape, seed=1)
    tensors = tuple(Tensor.from_numpy(x, device=device) for x in (q, k, v))
    chosen = (plan_from_name(plan_name, d) if plan_name
              else sm.choose_plan(d, lq, lk, b * h, device))
    rows = []
    for cut in CUTS:
        with _cut(cut):
            t = _harness.ours_ms(lambda: run_plan(tensors, shape, chosen), device)
        rows.append({"shape": name, "variant": f"{chosen.name if chosen else '?'} {cut}", **t})
    t16 = [torch.from_numpy(x).cuda() for x in (q, k, v)]
    rows.append({"shape": name, "variant": "torch sdpa fp16", "gpu_ms": _harness.torch_cuda_ms(
        lambda: torch.nn.functional.scaled_dot_product_attention(*t16))})
    flops = 4 * b * h * lq * lk * d
    for row in rows:
        row["tflops"] = flops / row["gpu_ms"] / 1e9
        print(row, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--only", default="", help="only the shapes whose name has this")
    parser.add_argument("--plan", default="", help="cut this plan (by name, e.g. "
                        "1x2x16pgsl-c2) instead of choose_plan's")
    args = parser.parse_args()
    device = gpucore.default_device()
    torch = _harness.torch_cuda()
    if not sm.available(device) or torch is None:
        raise SystemExit("needs f16 subgroup matrices (GPUCORE_RUNTIME=dawn) and torch CUDA")
    result: dict[str, Any] = {"environment": _harness.environment(device),
                              "errors": errors(device, torch)}
    result["timings"] = [row for name, shape in SHAPES if args.only in name
                         for row in timings(device, torch, name, shape, args.plan)]
    _harness.print_table(result["timings"], ["shape", "variant", "gpu_ms", "tflops"])
    if args.json:
        _harness.write_json(args.json, result)


if __name__ == "__main__":
    main()

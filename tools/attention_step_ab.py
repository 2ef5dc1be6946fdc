"""Lab tool: a whole model step, replayed (gpustd.capture, as the pipelines run it), under
variants of the matrix-unit attention's plan (gpustd/nn/_attention_subgroup_matrix.py), in one
process, the variants' timings interleaved over rounds so that clock drift reaches them all
alike. Random weights drawn by torch (as bench/flux.py draws FLUX's), no baseline. Needs
Dawn with subgroup matrices and torch CUDA (`--quick`: tiny configs, any adapter):

    GPUCORE_RUNTIME=dawn python -m tools.attention_step_ab --model sd15 --variants chosen,runs

Variants (each maps choose_plan's plan for every attention call of the step): `chosen` (as
it is), `runs` (adjacent softmax columns, SMPlan.runs, where the plan allows them), `h8` and
`h15` (SMPlan.headroom 8 or 15), `runs-h15`, `d128-4sg` (at head dim 128 the
four-subgroup plan choose_plan took before split row groups) and `d64-8sg-c2` (at head dim
64 eight subgroups split two to a row group, 64 query rows a workgroup); and the GEMM rules'
(with the chosen plans; run them with GPUSTD_GEMM_ACCUMULATE=f16): `no-deep-split`
(f16-accumulating deep products unsplit: matrix_units.ACC16_SPLIT off) and `gated-big-acc16`
(the gated epilogue on f16-accumulating 256 x 256 tiles too: dispatch.GATED_ON_BIG_ACC16).
Rows: GPU ms (timestamp
queries) and wall ms of the replayed step per round, the attention kernels' share of one
profiled step, and the largest difference of its output from the first variant's relative
to the largest value.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

import gpucore
import gpustd
from bench import _harness
from gpustd.gemm import dispatch, matrix_units
from gpustd.nn import _attention_subgroup_matrix as sm


def _runs(plan: sm.SMPlan) -> sm.SMPlan:
    return dataclasses.replace(plan, runs=True) if plan.regs and not plan.rotate else plan


def _four_subgroups(plan: sm.SMPlan) -> sm.SMPlan:
    if plan.dp != 128 or plan.split == 1:
        return plan
    return sm.SMPlan(plan.d, 1, 2, 4, prefetch=True, regs=True, lean=True,
                     headroom=plan.headroom)


def _eight_subgroups_split(plan: sm.SMPlan) -> sm.SMPlan:
    if plan.dp != 64:
        return plan
    return sm.SMPlan(plan.d, 1, 2, 8, prefetch=True, regs=True, lean=True, split=2,
                     headroom=plan.headroom)


VARIANTS: dict[str, Callable[[sm.SMPlan], sm.SMPlan]] = {
    "chosen": lambda plan: plan,
    "runs": _runs,
    "h8": lambda plan: dataclasses.replace(plan, headroom=8),
    "h15": lambda plan: dataclasses.replace(plan, headroom=15),
    "runs-h15": lambda plan: dataclasses.replace(_runs(plan), headroom=15),
    "d128-4sg": _four_subgroups,
    "no-deep-split": lambda plan: plan,
    "gated-big-acc16": lambda plan: plan,
    "d64-8sg-c2": _eight_subgroups_split,
}


class _RandomWeights(Mapping[str, np.ndarray]):
    """A lazy state dict for `module`: each tensor drawn by torch when it is read (normal(0,
    0.02), norm scales 1 + normal(0, 0.02), as bench/flux.py draws FLUX's), so that loading
    holds one tensor on the host at a time (load_state_dict asks `shape` first)."""

    def __init__(self, module: Any, torch: Any, dev: str) -> None:
        self._shapes = {key: tensor.shape for key, tensor in module.named_parameters()}
        self._torch, self._dev = torch, dev
        self._gen = torch.Generator(dev).manual_seed(0)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._shapes[key])

    def __getitem__(self, key: str) -> np.ndarray:
        shape = self._shapes[key]
        x = self._torch.randn(shape, generator=self._gen, device=self._dev) * 0.02
        if len(shape) == 1 and "norm" in key.rsplit(".", 2)[-2] and key.endswith("weight"):
            x += 1.0
        return x.half().cpu().numpy()

    def __iter__(self) -> Iterator[str]:
        return iter(self._shapes)

    def __len__(self) -> int:
        return len(self._shapes)


def _model(model: str, quick: bool, device: gpucore.Device, torch: Any, dev: str,
           blocks: tuple[int, int] | None = None) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """The model in f16 with random weights and its step's inputs, as bench/unet.py,
    bench/sdxl.py and bench/flux.py step them (CFG batch 2 for the UNets; --quick: their
    tiny configs; `blocks`: FLUX's double and single block counts)."""
    from bench import flux, sdxl, unet
    from diffusion.models import (
        FluxTransformer2DModel,
        SD3Transformer2DModel,
        UNet2DConditionModel,
    )

    f16 = np.dtype(np.float16)
    configs = {"sd15": unet.TINY_UNET if quick else unet.SD15_UNET,
               "sdxl": sdxl.TINY_SDXL_UNET if quick else sdxl.SDXL_BASE_UNET,
               "flux": flux.TINY_FLUX if quick else flux.FLUX_DEV,
               "sd35": flux.TINY_SD35 if quick else flux.SD35_LARGE}
    config = dict(configs[model])
    if blocks and model == "flux":  # fewer blocks: the same attention calls, fewer of them
        config.update(num_layers=blocks[0], num_single_layers=blocks[1])
    kind = {"flux": FluxTransformer2DModel,
            "sd35": SD3Transformer2DModel}.get(model, UNet2DConditionModel)
    ours = kind(config, dtype=f16, device=device)
    ours.load_state_dict(_RandomWeights(ours, torch, dev), dtype=f16)

    def put(x: Any, dtype: Any = f16) -> gpustd.Tensor:
        return gpustd.asarray(np.asarray(x, np.float32), dtype=dtype, device=device)

    if model == "flux":
        x = flux._inputs("flux", config, quick)
        text, pooled = put(x["encoder_hidden_states"]), put(x["pooled_projections"])
        rotary = ours.rotary(x["txt_ids"], x["img_ids"])

        def step(h: Any, t: Any, g: Any) -> Any:
            return ours(h, text, pooled, t, None, None, g, rotary=rotary)

        return step, (put(x["hidden_states"]), put(x["timestep"], np.float32),
                      put(x["guidance"], np.float32))
    if model == "sd35":  # CFG batch 2, 333 text tokens, as bench/flux.py steps it
        x = flux._inputs("sd35", config, quick)
        text, pooled = put(x["encoder_hidden_states"]), put(x["pooled_projections"])
        return ((lambda h, t: ours(h, text, pooled, t)),
                (put(x["hidden_states"]), put(x["timestep"], np.float32)))
    if model == "sdxl":
        x = sdxl._inputs(config)
        cond = {"text_embeds": put(x["text_embeds"]), "time_ids": put(x["time_ids"], np.float32)}
        return ((lambda sample, t, context: ours(sample, t, context, cond)),
                (put(x["sample"]), put(x["timesteps"], np.float32), put(x["context"])))
    rng = np.random.default_rng(0)
    size = config["sample_size"]
    return ours.forward, (put(rng.standard_normal((2, 4, size, size))),
                          put([500.0, 500.0], np.float32),
                          put(rng.standard_normal((2, 77, config["cross_attention_dim"]))))


# the GEMM rules' variants: (module, attribute, value) set while the step is captured
GEMM_SETTINGS: dict[str, list[tuple[Any, str, Any]]] = {
    "no-deep-split": [(matrix_units, "ACC16_SPLIT", False)],
    "gated-big-acc16": [(dispatch, "GATED_ON_BIG_ACC16", True)]}


def _captured(fn: Callable[..., Any], args: tuple[Any, ...], variant: str) -> tuple[Any, Any]:
    """The step captured with `variant`'s plans: (capture, its output as float64)."""
    chosen = sm.choose_plan

    def choose(*a: Any) -> sm.SMPlan | None:
        plan = chosen(*a)
        return None if plan is None else VARIANTS[variant](plan)

    sm.choose_plan = choose  # type: ignore[assignment]
    settings = GEMM_SETTINGS.get(variant, [])
    saved = [getattr(module, name) for module, name, _ in settings]
    for module, name, value in settings:
        setattr(module, name, value)
    matrix_units._layout.cache_clear()  # it keeps each shape's split
    try:
        step = gpustd.capture(fn)
        step(*args)  # recorded here, with the variant's plans
        out = step(*args).numpy().astype(np.float64)
    finally:
        sm.choose_plan = chosen  # type: ignore[assignment]
        for (module, name, _), value in zip(settings, saved, strict=True):
            setattr(module, name, value)
        matrix_units._layout.cache_clear()
    return step, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("sd15", "sdxl", "flux", "sd35"), default="sd15")
    parser.add_argument("--variants", default="chosen,runs", help="comma-separated, of: "
                        + ", ".join(VARIANTS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--quick", action="store_true", help="tiny configs, any adapter")
    parser.add_argument("--blocks", default="", help="FLUX only: DOUBLE,SINGLE block counts "
                        "(e.g. 2,4: six of the step's 57 attention calls, 1/10 of its weights "
                        "to draw)")
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}: choose from {', '.join(VARIANTS)}")
    import torch

    device = gpucore.default_device()
    cuda = _harness.torch_cuda() is not None
    if not args.quick and not (sm.available(device) and cuda):
        raise SystemExit("needs f16 subgroup matrices (GPUCORE_RUNTIME=dawn) and torch CUDA")
    try:
        blocks = tuple(int(n) for n in args.blocks.split(",")) if args.blocks else None
    except ValueError:
        raise SystemExit(f"--blocks {args.blocks!r}: give two counts, DOUBLE,SINGLE") from None
    if blocks is not None and len(blocks) != 2:
        raise SystemExit(f"--blocks {args.blocks!r}: give two counts, DOUBLE,SINGLE")
    fn, inputs = _model(args.model, args.quick, device, torch, "cuda" if cuda else "cpu",
                        blocks)  # type: ignore[arg-type]
    steps, outputs = {}, {}
    for variant in variants:
        steps[variant], outputs[variant] = _captured(fn, inputs, variant)
    times: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for variant in variants:
            call = functools.partial(steps[variant], *inputs)
            times[variant].append(_harness.ours_ms(call, device, warmup=1, repeat=args.repeat))
    base = outputs[variants[0]]
    rows = []
    for variant in variants:
        with device.profile() as prof:
            steps[variant](*inputs)
        attention = [(n, ns) for name, (n, ns) in prof.summary().items() if "attention" in name]
        rows.append({
            "model": args.model, "blocks": args.blocks or "all", "variant": variant,
            "gpu_ms": statistics.median(t["gpu_ms"] for t in times[variant]),
            "wall_ms": statistics.median(t["wall_ms"] for t in times[variant]),
            "gpu_ms_rounds": [t["gpu_ms"] for t in times[variant]],
            "wall_ms_rounds": [t["wall_ms"] for t in times[variant]],
            "attention_calls": sum(n for n, _ in attention),
            "attention_ms": sum(ns for _, ns in attention) / 1e6,
            "gemm_ms": sum(ns for name, (_, ns) in prof.summary().items()
                           if "gemm" in name) / 1e6,
            "max_rel_diff": float(np.abs(outputs[variant] - base).max() / np.abs(base).max()),
            "finite": bool(np.isfinite(outputs[variant]).all())})
        print(rows[-1], flush=True)
    _harness.print_table(rows, ["model", "variant", "gpu_ms", "wall_ms", "attention_calls",
                                "attention_ms", "gemm_ms", "max_rel_diff"])
    if args.json:
        _harness.write_json(args.json, {"environment": _harness.environment(device),
                                        "rows": rows})


if __name__ == "__main__":
    main()

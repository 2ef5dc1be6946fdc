"""Lab tool: RRDBNet x4 (Real-ESRGAN x4plus: 64 features, growth 32, 23 blocks) in float16 at
512² -> 2048², the whole network under each conv tile choice for its narrow convs
(gpustd/nn/_conv_subgroup_matrix.NARROW_TILES), eager and replayed (gpustd.capture), with the
kernel table of one call; `NAME-unfused` runs NAME's tiles with the convs' LeakyReLU and
residual scaling as separate ops (as before the epilogue took them), `NAME-concat` the dense
blocks' features concatenated before each conv (as before they were gathered in one
tensor); beside spandrel's fp16 network on CUDA in the same process.

    GPUCORE_RUNTIME=dawn python -m tools.upscale_lab --json out.json [--variants rule,wide]
    python -m tools.upscale_lab --size 24 --blocks 1 --features 8    # a smoke run

Every variant's picture is compared with spandrel's (rel_err: max|ours - torch| / max|torch|)
and with the first variant's bits. Not a test: it only measures.
"""

from __future__ import annotations

import argparse
import functools
from typing import Any

import numpy as np

import gpucore
import gpustd
from bench import _harness
from bench.upscale import _spandrel_esrgan
from gpustd.nn import _conv_subgroup_matrix as csm

# name -> (NARROW_TILES, NARROW_SMALL) for that run
VARIANTS: dict[str, tuple[dict[int, str], str | None]] = {
    "rule": (dict(csm.NARROW_TILES), csm.NARROW_SMALL),
    "wide": ({}, None),  # the rule before the narrow tiles: 32 x 32, 64 x 64, portable
    "np": ({32: "32x128np", 64: "64x128np"}, "16x128"),
    "32x256": ({32: "32x256", 64: "64x256"}, "16x128"),
}


def _with_concat(model: Any) -> Any:
    """RRDBNet._rdb as it was: a concatenation of every feature before each conv."""
    from gpustd.nn import concat

    def rdb(self: Any, prefix: str, x: Any) -> Any:
        features = [x]
        for k in range(1, 5):
            features.append(self._conv(f"{prefix}.conv{k}.0", concat(features), slope=0.2))
        return self._conv(f"{prefix}.conv5.0", concat(features), add=x, scale=0.2)

    return functools.partial(rdb, model)


def _unfused(conv2d: Any) -> Any:
    """conv2d with its LeakyReLU and residual scaling as separate ops (as before the
    epilogue took them): the `-unfused` variants."""
    def call(*args: Any, negative_slope: float | None = None, scale: float = 1.0,
             add: Any = None, **kwargs: Any) -> Any:
        y = conv2d(*args, **kwargs)
        y = y if negative_slope is None else gpustd.maximum(y, y * negative_slope)
        y = y if scale == 1.0 else y * scale
        return y if add is None else y + add
    return call


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=23)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    import torch

    from diffusion.models import esrgan
    from diffusion.models.esrgan import RRDBNet

    device = gpucore.default_device()
    cuda = _harness.torch_cuda()
    torch.manual_seed(0)
    reference = _spandrel_esrgan()(in_nc=3, out_nc=3, num_filters=args.features,
                                   num_blocks=args.blocks, scale=4).eval()
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    image = np.random.default_rng(0).random((1, 3, args.size, args.size), dtype=np.float32)
    dev = "cuda" if cuda else "cpu"
    model = (reference.half() if cuda else reference.float()).to(dev)
    xt = torch.from_numpy(image).to(dev).to(torch.float16 if cuda else torch.float32)
    with torch.no_grad():
        expected = model(xt).float().cpu().numpy().astype(np.float64)
        torch_ms = _harness.torch_cuda_ms(functools.partial(model, xt)) if cuda else None
    print(f"spandrel fp16: {torch_ms} ms GPU", flush=True)
    ours = RRDBNet.from_state_dict(state, dtype=np.float16, device=device)
    x = gpustd.asarray(image.astype(np.float16), device=device)
    rows: list[dict[str, Any]] = []
    first = None
    saved = dict(csm.NARROW_TILES)
    fused = esrgan.conv2d
    saved_small = csm.NARROW_SMALL
    for name in args.variants.split(","):
        base = name.split("-")[0]
        csm.NARROW_TILES.clear()
        csm.NARROW_TILES.update(VARIANTS[base][0])
        csm.NARROW_SMALL = VARIANTS[base][1]
        esrgan.conv2d = _unfused(fused) if "-unfused" in name else fused
        if "-concat" in name:
            ours._rdb = _with_concat(ours)  # type: ignore[method-assign]
        try:
            got, replayed, timings, step = _harness.eager_and_replay(
                ours, (x,), device, args.repeat)
            step.reset()
            with device.profile() as prof:
                ours(x)
        finally:
            esrgan.conv2d = fused
            ours.__dict__.pop("_rdb", None)
            csm.NARROW_SMALL = saved_small
            csm.NARROW_TILES.clear()
            csm.NARROW_TILES.update(saved)
        first = got if first is None else first
        tiles, small = VARIANTS[base]
        row = {"variant": name, "tiles": {**{str(k): v for k, v in tiles.items()},
                                          "small": small},
               "rel_err": float(np.abs(got - expected).max() / np.abs(expected).max()),
               "same_as_first": bool(np.array_equal(got, first)),
               "replay_equal": bool(np.array_equal(got, replayed)),
               **{f"{mode}_{k}": v for mode, t in timings.items() for k, v in t.items()},
               "torch_gpu_ms": torch_ms,
               "kernels": {k: {"calls": n, "ms": ns / 1e6}
                           for k, (n, ns) in prof.summary().items()}}
        rows.append(row)
        print({k: v for k, v in row.items() if k != "kernels"}, flush=True)
        print("\n".join(prof.table().splitlines()[:14]), flush=True)
    print(f"{'variant':12} {'rel_err':>9} {'eager gpu':>9} {'eager wall':>10} "
          f"{'replay wall':>11} {'torch':>7}")
    for r in rows:
        print(f"{r['variant']:12} {r['rel_err']:9.2e} {r['eager_gpu_ms']:9.1f} "
              f"{r['eager_wall_ms']:10.1f} {r['replay_wall_ms']:11.1f} {torch_ms or 0:7.1f}")
    if args.json:
        _harness.write_json(args.json, {"environment": _harness.environment(device),
                                        "rows": rows})


if __name__ == "__main__":
    main()

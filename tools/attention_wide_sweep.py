"""Wide-head attention (gpustd/nn/_attention_wide.py) by chunk size: the VAEs' mid-block call,
(1, L, 512) one head, at each of --tokens, in float16 and float32, with the float32 scores of
a chunk at each of --scores-mib; beside it the flash kernel and torch's SDPA (CUDA events, TF32
off). GPU and wall ms (medians), each kernel's share of one call's GPU time, and the error of
4 query rows against torch float64.

    GPUCORE_RUNTIME=dawn python -m tools.attention_wide_sweep --tokens 4096,16384,65536 \\
        --scores-mib 16,32,64,128 --json OUT.json
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

import gpucore
from bench import _harness
from gpustd import Tensor
from gpustd.nn import _attention_wide as wide
from gpustd.nn.attention import attention


def _error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def _ours(tensors: list[Tensor], device: gpucore.Device, repeat: int, *, flash: bool = False,
          score_bytes: int = wide.SCORE_BYTES) -> dict[str, Any]:
    before = wide.SCORE_BYTES, wide.WIDE_FROM
    wide.SCORE_BYTES, wide.WIDE_FROM = score_bytes, (1 << 30) if flash else wide.WIDE_FROM
    try:
        timed = _harness.ours_ms(lambda: attention(*tensors, heads=1), device, warmup=1,
                                 repeat=repeat)
        out = attention(*tensors, heads=1).numpy()[0]
        kernels: dict[str, float] = {}
        if device.has_timestamps:
            with device.profile() as prof:
                attention(*tensors, heads=1)
            kernels = {name: ns / 1e6 for name, (_, ns) in prof.summary().items()}
    finally:
        wide.SCORE_BYTES, wide.WIDE_FROM = before
    return {"gpu_ms": timed["gpu_ms"], "wall_ms": timed["wall_ms"],
            "dispatches": timed["dispatches"], "kernels_ms": kernels, "out": out}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", default="16384", help="comma-separated sequence lengths")
    parser.add_argument("--scores-mib", default="16,32,64,128",
                        help="comma-separated float32 score bytes of a chunk, in MiB")
    parser.add_argument("--dtypes", default="float16,float32")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--no-flash", action="store_true", help="skip the flash kernel's rows")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    import torch
    import torch.nn.functional as F

    device = gpucore.default_device()
    cuda = _harness.torch_cuda() is not None
    rows = []
    for tokens in (int(t) for t in args.tokens.split(",")):
        rng = np.random.default_rng(tokens)
        host = [rng.standard_normal((1, tokens, 512)).astype(np.float32) for _ in range(3)]
        picked = [0, 1, tokens // 2, tokens - 1]
        q, k, v = (torch.from_numpy(x[:, None].astype(np.float64)) for x in host)
        want = F.scaled_dot_product_attention(q[:, :, picked], k, v)[0, 0].numpy()
        for name in args.dtypes.split(","):
            dtype = np.dtype(name)
            arrays = [x.astype(dtype) for x in host]
            tensors = [Tensor.from_numpy(x, device=device) for x in arrays]
            variants = [(f"two GEMMs, {mib} MiB scores", {"score_bytes": mib << 20})
                        for mib in (int(m) for m in args.scores_mib.split(","))]
            if not args.no_flash:
                variants.append(("flash kernel", {"flash": True}))
            for side, options in variants:
                found = _ours(tensors, device, args.repeat, **options)  # type: ignore[arg-type]
                got = found.pop("out")
                rows.append({"tokens": tokens, "dtype": name, "side": side, **found,
                             "rel_err": _error(got[picked].astype(np.float64), want)})
                print(f"{tokens} {name} {side}: {found['gpu_ms']:.3f} ms GPU, "
                      f"{found['wall_ms']:.3f} wall, {found['dispatches']} dispatches; "
                      + ", ".join(f"{k} {v:.2f}" for k, v in found["kernels_ms"].items()),
                      flush=True)
            if cuda:
                torch.backends.cuda.matmul.allow_tf32 = False
                tq, tk, tv = (torch.from_numpy(x[:, None]).cuda() for x in arrays)

                def sdpa(tq: Any = tq, tk: Any = tk, tv: Any = tv) -> Any:
                    return F.scaled_dot_product_attention(tq, tk, tv)

                ms = _harness.torch_cuda_ms(sdpa, repeat=args.repeat)
                got = sdpa()[0, 0].float().cpu().numpy()
                rows.append({"tokens": tokens, "dtype": name, "side": "torch SDPA",
                             "gpu_ms": ms, "wall_ms": ms,
                             "rel_err": _error(got[picked].astype(np.float64), want)})
                print(f"{tokens} {name} torch SDPA: {ms:.3f} ms", flush=True)
                del tq, tk, tv
            if args.json:  # after every length: a call cut short keeps what it measured
                _harness.write_json(args.json, {"tool": "attention_wide_sweep",
                                                "environment": _harness.environment(device),
                                                "notes": __doc__.split("\n\n")[0],
                                                "rows": rows})


if __name__ == "__main__":
    main()

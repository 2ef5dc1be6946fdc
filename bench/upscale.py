"""Real-ESRGAN x4plus (RRDBNet: 64 features, 23 blocks) upscaling 512x512 to 2048x2048, random
weights, on our kernels and on spandrel's RRDBNet (torch) in the same process, float32 and
float16.

torch runs on CUDA with TF32 off (true fp32 convolutions, as ours), on the CPU when there is no
CUDA (--quick only: 8 features, 1 block, 24x20). float16 runs where the device has shader-f16
(ours) and on CUDA (torch's .half()).
"""

from __future__ import annotations

import functools
import sys
import types
from typing import Any

import numpy as np

import gpucore
import gpustd

from . import _harness

FULL = dict(features=64, blocks=23, height=512, width=512)
QUICK = dict(features=8, blocks=1, height=20, width=24)
COLUMNS = ["dtype", "image", "dispatches", "rel_err", "ours_gpu_ms", "ours_encode_ms",
           "ours_wall_ms", "torch_gpu_ms", "torch_wall_ms", "vs_torch"]


def _spandrel_esrgan() -> Any:
    """spandrel's RRDBNet class; without a working torchvision (a CUDA wheel beside a CPU torch)
    the two architectures that import it at load (LaMa, RestoreFormer, unused here) get a stub."""
    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError):
        for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional"):
            sys.modules[name] = types.ModuleType(name)
        stub: Any = sys.modules["torchvision.transforms.functional"]
        stub.InterpolationMode = stub.rotate = stub.normalize = None
    from spandrel.architectures.ESRGAN import ESRGAN

    return ESRGAN


def run(quick: bool = False) -> dict[str, Any]:
    import torch

    from diffusion.models.esrgan import RRDBNet

    size = QUICK if quick else FULL
    device = gpucore.default_device()
    cuda = _harness.torch_cuda()
    repeat = 3 if quick else 10
    torch.manual_seed(0)
    reference = _spandrel_esrgan()(in_nc=3, out_nc=3, num_filters=size["features"],
                                   num_blocks=size["blocks"], scale=4).eval()
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    image = np.random.default_rng(0).random((1, 3, size["height"], size["width"]),
                                            dtype=np.float32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = "cuda" if cuda else "cpu"
    rows = []
    for dtype in _harness.dtypes(device):
        ours = RRDBNet.from_state_dict(state, dtype=dtype, device=device)
        x = gpustd.asarray(image.astype(dtype), device=device)
        got = ours(x).numpy().astype(np.float64)
        timing = _harness.ours_ms(functools.partial(ours, x), device, warmup=1, repeat=repeat)
        kernels = {}
        if device.has_timestamps:
            with device.profile() as prof:
                ours(x)
            kernels = {k: {"calls": n, "ms": ns / 1e6} for k, (n, ns) in prof.summary().items()}
            print(f"-- where our {dtype.name} upscale's kernel time goes")
            print("\n".join(prof.table().splitlines()[:8]))
        half = dtype == np.float16
        if half and not cuda:
            continue  # torch's CPU half convolutions are not a baseline worth a row
        model = (reference.half() if half else reference.float()).to(dev)
        xt = torch.from_numpy(image).to(dev).to(torch.float16 if half else torch.float32)
        theirs: dict[str, float] = {}
        call = functools.partial(model, xt)
        with torch.no_grad():
            expected = model(xt).float().cpu().numpy().astype(np.float64)
            if cuda:
                theirs["torch_gpu_ms"] = _harness.torch_cuda_ms(call, repeat=repeat)
            theirs["torch_wall_ms"] = _harness.torch_wall_ms(
                call, torch, repeat if cuda else 1, cuda=bool(cuda))
        rows.append({
            "dtype": dtype.name, "image": f"{size['width']}x{size['height']} -> "
                                          f"{4 * size['width']}x{4 * size['height']}",
            "dispatches": timing["dispatches"],
            "rel_err": float(np.abs(got - expected).max() / np.abs(expected).max()),
            **{f"ours_{k}": v for k, v in timing.items() if k != "dispatches"}, **theirs,
            "vs_torch": theirs["torch_wall_ms"] / timing["wall_ms"],
            "baseline": f"spandrel-torch-{dev}-{'fp16' if half else 'fp32'}",
            "kernels": kernels})
    return {
        "benchmark": "upscale",
        "environment": _harness.environment(device),
        "notes": "RRDBNet (Real-ESRGAN x4plus layout) one untiled pass, random weights drawn by "
                 "spandrel; rel_err = max|ours - spandrel| / max|spandrel| in the row's dtype; "
                 "ours_* as in the other model benchmarks (timestamp queries, host encode, call "
                 "+ submit + wait), kernels: one call's GPU ms by kernel; torch_gpu_ms by "
                 "CUDA events, torch_wall_ms by perf_counter around call + cuda.synchronize "
                 "(TF32 off); vs_torch = torch_wall_ms / ours_wall_ms (above 1: we are faster).",
        "columns": COLUMNS,
        "rows": rows,
    }

"""Lab tool: GEGLU's projection and gate as one matrix-unit GEMM (gpustd/gemm/matrix_geglu.py)
against the GEMM and nn.geglu apart, in one process, at the SD UNets' feed-forward shapes.
Needs Dawn with subgroup matrices:

    GPUCORE_RUNTIME=dawn python -m tools.geglu_ab [--json out.json]

Rows: GPU ms of linear_geglu each way (timestamp queries), its dispatches, and the largest
difference between the two results relative to the largest value (the two-pass path rounds
value and gate to f16 before the gate).
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

import numpy as np

import gpucore
from bench import _harness
from gpustd import Tensor
from gpustd.gemm import matrix_units

# (m, d, k): tokens x CFG batch, the gate's width, the layer's width
SHAPES = [(2048, 5120, 1280), (8192, 2560, 640), (8192, 1280, 320), (2048, 2560, 640),
          (512, 5120, 1280)]


def _row(device: gpucore.Device, rng: np.random.Generator, m: int, d: int,
         k: int) -> dict[str, Any]:
    linear = importlib.import_module("gpustd.nn.linear")
    x = Tensor.from_numpy(rng.standard_normal((m, k), dtype=np.float32).astype(np.float16),
                          device=device)
    w = Tensor.from_numpy((rng.standard_normal((2 * d, k), dtype=np.float32) / 8).astype(
        np.float16), device=device)
    b = Tensor.from_numpy(rng.standard_normal(2 * d, dtype=np.float32).astype(np.float16),
                          device=device)

    def run() -> None:
        linear.linear_geglu(x, w, b)

    row: dict[str, Any] = {"m": m, "d": d, "k": k}
    results = {}
    names = vars(linear)  # linear_geglu looks geglu_tile up here at each call
    fits = names["geglu_tile"]
    for way, check in (("one_gemm", fits), ("two_passes", lambda *a: None)):
        names["geglu_tile"] = check
        try:
            timing = _harness.ours_ms(run, device)
            results[way] = linear.linear_geglu(x, w, b).numpy().astype(np.float32)
        finally:
            names["geglu_tile"] = fits
        row[f"{way}_gpu_ms"], row[f"{way}_dispatches"] = timing["gpu_ms"], timing["dispatches"]
    two = results["two_passes"]
    row["max_rel_diff"] = float(np.abs(results["one_gemm"] - two).max() / np.abs(two).max())
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    device = gpucore.default_device()
    if not matrix_units.available(device):
        raise SystemExit("needs f16 subgroup matrices (GPUCORE_RUNTIME=dawn on a GPU)")
    rng = np.random.default_rng(0)
    rows = [_row(device, rng, *shape) for shape in SHAPES]
    if args.json:
        _harness.write_json(args.json, {"environment": _harness.environment(device),
                                        "rows": rows})


if __name__ == "__main__":
    main()

"""python -m bench NAME [--json PATH] [--quick]: run one benchmark (see BENCHMARKS).

Each benchmark times our kernels and a baseline in the same run (torch on the same GPU when
torch.cuda is available, numpy on the CPU otherwise), prints a table and writes JSON.
BENCH_CONV_PROLOGUE=1 has the convs read GroupNorm (+ SiLU) and the 2x upsampling of their
input in their gather (gpustd.nn.prologue.FUSED; 0, the default: written out first).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from . import _harness

BENCHMARKS = ("vector_add", "gemm", "fft", "nn", "unet", "txt2img", "vae", "sdxl", "linalg",
              "multigpu", "memory", "upscale", "flux", "controlnet", "lowvram", "load",
              "quant_gemm", "flatness", "overhead", "gemm_ceiling", "flux_cache",
              "zimage", "dit_families", "wan", "dit_controlnet", "int8_gemm", "wan_lowvram",
              "pictures", "host_ops", "qkv", "vae_half", "dc_ae", "hidream_routing")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("name", choices=BENCHMARKS, help="which benchmark to run")
    parser.add_argument("--json", metavar="PATH", help="write results here (atomic)")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and few repeats (a smoke run, not a measurement)")
    args = parser.parse_args(argv)
    if os.environ.get("BENCH_CONV_PROLOGUE") in ("0", "1"):
        from gpustd.nn import prologue

        prologue.FUSED = os.environ["BENCH_CONV_PROLOGUE"] == "1"
    try:
        module = importlib.import_module(f"bench.{args.name}")
    except ModuleNotFoundError as exc:
        parser.error(f"benchmark {args.name!r} is not available yet ({exc})")
    result = module.run(quick=args.quick)
    _harness.print_table(result["rows"], result["columns"])
    if args.json:
        _harness.write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""python -m bench.flux_load: where a FLUX.1 dev load from the page cache spends its seconds.

    python -m bench.flux_load write ROOT [--layers 19,38,24] [--quick]
    python -m bench.flux_load load ROOT --label NAME --json OUT [--repeat 2]
    python -m bench.flux_load diffusers ROOT --json OUT        (torch CUDA, bfloat16)

`write` makes a random FLUX.1 dev diffusers folder (bench/_cold_files.py: bfloat16 as
published, 34.0 GB at full size, tokenizers of the bundled vocabularies; `--layers D,S,T`
keeps the widths with D double blocks, S single blocks and T T5 layers). `load` times
`diffusion.load_pipeline(ROOT, dtype=float16)` in this process, `--repeat` times for each
way the tree can convert bfloat16 in `--ways` (on the GPU, on the host threads, or the
tree's own choice: "auto"; a tree without diffusion.loaders.device_cast has only its own)
and each count of reading threads in `--threads`. The files are read once first (unless
`--no-warm`: just written, they are there already), so every load finds them in the page
cache, as bench.pictures' loads did.
Each load ends with a synchronize (the GPU's work is part of the load), then the pipeline
is freed. Seconds per phase (gpucore.Phases) come with each load: "read" the file reads
(and host casts) on the main thread plus, where they run on threads, those threads'
seconds summed; "read wait" the main thread waiting for the read ahead; "upload" the main
thread's transfers (without their "read"). `diffusers` times diffusers'
`FluxPipeline.from_pretrained(ROOT, torch_dtype=bfloat16).to("cuda")` the same way.

The script runs as a file too (`python PATH/bench/flux_load.py load ...`), so one tree's copy
times another tree's code: the tree first on PYTHONPATH is the one loaded.
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["load_times", "main"]


def _warm(root: Path) -> float:
    """Read every weight file once (into the page cache); the seconds it took."""
    start = time.perf_counter()
    for path in sorted(root.rglob("*.safetensors")):
        with open(path, "rb", buffering=0) as file:
            while file.read(64 << 20):
                pass
    return time.perf_counter() - start


def _variants(ways: list[str], threads: list[int]) -> dict[str, Any]:
    """name -> a function setting the tree's bfloat16 conversion (each of `ways`: "gpu",
    "host", or "auto", the tree's own choice; a tree without diffusion.loaders.device_cast
    has only its own) and its reading threads (each of `threads`; 0: the tree's own)."""
    from diffusion.loaders import reading

    try:
        from diffusion.loaders import device_cast
    except ImportError:
        device_cast = None
        ways = ["host"]
    own = reading.PIECE_THREADS, reading.AHEAD_THREADS
    enabled = {"gpu": True, "host": False, "auto": None}

    def setter(way: str, count: int) -> Any:
        def choose() -> None:
            if device_cast is not None:
                device_cast.ENABLED = enabled[way]
            reading.PIECE_THREADS, reading.AHEAD_THREADS = (count, count) if count else own
            for pool in reading._pools.values():  # made again with the new counts
                pool.shutdown()
            reading._pools.clear()
        return choose

    return {f"{way}{f'-{count}' if count else ''}": setter(way, count)
            for count in threads for way in ways}


def load_times(root: Path, *, repeat: int, ways: list[str], threads: list[int],
               save: Any = None) -> dict[str, Any]:
    """Each variant's loads of `root` (alternating): seconds and phases of each; `save(rows)`
    after each load (a run cut short keeps what it measured)."""
    import numpy as np

    import gpucore
    from diffusion import load_pipeline

    device = gpucore.default_device()
    dtype = np.float16 if device.has_f16 else np.float32
    variants = _variants(ways, threads)
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for _ in range(repeat):
        for name, choose in variants.items():
            choose()
            gc.collect()
            device.empty_pool()
            with gpucore.Phases() as phases:
                start = time.perf_counter()
                pipe = load_pipeline(root, dtype=dtype, device=device)
                loaded = time.perf_counter() - start
                device.synchronize()
                seconds = time.perf_counter() - start
            rows[name].append({"s": round(seconds, 3), "returned_s": round(loaded, 3),
                               **phases.split()})
            print(f"{name}: {seconds:.2f} s ({phases.table()})", flush=True)
            del pipe
            if save is not None:
                save({"loads": rows})
    return {"device": device.info.label, "dtype": np.dtype(dtype).name,
            "loads": rows,
            "median_s": {name: statistics.median(r["s"] for r in runs)
                         for name, runs in rows.items()}}


def diffusers_times(root: Path, *, repeat: int) -> dict[str, Any]:
    """diffusers' FluxPipeline loaded to CUDA in bfloat16, `repeat` times."""
    import diffusers
    import torch

    cuda = torch.cuda.is_available()  # (the CPU: only to try the command)
    times = []
    for _ in range(repeat):
        gc.collect()
        torch.cuda.empty_cache()
        start = time.perf_counter()
        pipe = diffusers.FluxPipeline.from_pretrained(root, torch_dtype=torch.bfloat16)
        pipe.to("cuda" if cuda else "cpu")
        if cuda:
            torch.cuda.synchronize()
        times.append(round(time.perf_counter() - start, 3))
        print(f"diffusers: {times[-1]:.2f} s", flush=True)
        del pipe
    return {"device": torch.cuda.get_device_name() if cuda else "cpu",
            "torch": torch.__version__,
            "diffusers": diffusers.__version__, "loads_s": times,
            "median_s": statistics.median(times)}


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.flux_load", description=__doc__)
    parser.add_argument("mode", choices=("write", "load", "diffusers"))
    parser.add_argument("root", type=Path)
    parser.add_argument("--layers", default="", help="D,S,T: double, single and T5 layers")
    parser.add_argument("--quick", action="store_true", help="write the tiny configs")
    parser.add_argument("--label", default="tree")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--ways", default="gpu,host", help="bfloat16 conversions to try: "
                        "gpu, host, auto (the tree's own choice)")
    parser.add_argument("--threads", default="0", help="reading threads to try (0: the "
                        "tree's own), e.g. 0,16")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-warm", action="store_true", help="do not read the files first")
    args = parser.parse_args(argv)
    if args.mode == "write":
        from bench._cold_files import _Pool, write_flux_folder

        layers = tuple(int(n) for n in args.layers.split(",")) if args.layers else None
        start = time.perf_counter()
        size = write_flux_folder(args.root, args.quick, _Pool(), tokenizers=True,
                                 layers=layers)  # type: ignore[arg-type]
        result: dict[str, Any] = {"bytes": size, "layers": args.layers or "19,38,24",
                                  "write_s": round(time.perf_counter() - start, 3)}
    else:
        result = {"label": args.label,
                  "warm_read_s": None if args.no_warm else round(_warm(args.root), 3)}
        if args.mode == "load":
            result |= load_times(args.root, repeat=args.repeat, ways=args.ways.split(","),
                                 threads=[int(n) for n in args.threads.split(",")],
                                 save=lambda part: _save(args.json, {**result, **part}))
        else:
            result |= diffusers_times(args.root, repeat=args.repeat)
    print(json.dumps({k: v for k, v in result.items() if k != "loads"}), flush=True)
    _save(args.json, result)


def _save(path: Path | None, result: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])

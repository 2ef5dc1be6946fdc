"""How close one seed's pictures are across adapters and runtimes (issue: any GPU for real).

    python -m tools.adapter_parity draw OUT.npz [--adapters all] [--dtypes float32,float16]
    python -m tools.adapter_parity compare A.npz B.npz ...

`draw` makes the same pictures on every adapter named (gpucore.select_adapters: "all",
indices, dawn:0, ...): the bundled model at its 128 px and at 256 px (Euler a and DDIM, 10
steps, seed 7) and, with --sd15, a full-size SD 1.5 of seeded random weights at 256 px (4
steps), in each dtype the adapter runs; it saves them by "adapter-label/dtype/case". `compare`
prints, for every pair of files and every case both hold, the max and mean absolute pixel
difference (0-255) and whether the bits are equal.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
from pathlib import Path

import numpy as np

CASES = {
    "bundled 128 Euler a": dict(sampler="Euler a", width=128, height=128),
    "bundled 128 DDIM": dict(sampler="DDIM", width=128, height=128),
    "bundled 256 Euler a": dict(sampler="Euler a", width=256, height=256),
}


def _draw(pipe: object, case: dict[str, object], steps: int) -> np.ndarray:
    from diffusion import GenerationRequest

    request = GenerationRequest(prompt="a red circle on a blue background", steps=steps,
                                cfg_scale=7.0, seed=7, **case)  # type: ignore[arg-type]
    return pipe.generate(request).images[0]  # type: ignore[attr-defined, no-any-return]


def draw(out: Path, adapters: str, dtypes: list[str], sd15: bool) -> None:
    import gpucore
    from diffusion import default_model_path, load_pipeline

    pictures: dict[str, np.ndarray] = {}
    sd15_root = None
    if sd15:
        from bench.txt2img import write_sd15_folder

        sd15_root = Path(tempfile.mkdtemp(prefix="sd15-")) / "sd15"
        write_sd15_folder(sd15_root, False)  # torch.manual_seed(0): the same weights anywhere
    for info in gpucore.select_adapters(adapters):
        device = gpucore.Device(info)
        for dtype in dtypes:
            if dtype == "float16" and not device.has_f16:
                continue
            where = f"{info.runtime}-{info.backend}:{info.name}/{dtype}"
            pipe = load_pipeline(default_model_path(), device=device, dtype=dtype)
            for name, case in CASES.items():
                pictures[f"{where}/{name}"] = _draw(pipe, case, 10)
                print(where, name, flush=True)
            if sd15_root is not None:
                pipe = load_pipeline(sd15_root, device=device, dtype=dtype)
                pictures[f"{where}/sd15 256 Euler a"] = _draw(
                    pipe, dict(sampler="Euler a", width=256, height=256), 4)
                print(where, "sd15", flush=True)
            np.savez_compressed(out, **pictures)  # as it goes: a run cut short keeps these
    print(f"wrote {out} ({len(pictures)} pictures)")


def compare(files: list[Path]) -> None:
    loaded = {}
    for f in files:
        with np.load(f) as data:
            loaded.update({k: data[k] for k in data.files})
    by_case: dict[str, dict[str, np.ndarray]] = {}
    for key, picture in loaded.items():
        where, dtype, case = key.split("/")
        by_case.setdefault(case, {})[f"{where}/{dtype}"] = picture
    print(f"{'case':22} {'a':44} {'b':44} {'max':>5} {'mean':>7} same bits")
    for case, pictures in sorted(by_case.items()):
        for (a, pa), (b, pb) in itertools.combinations(sorted(pictures.items()), 2):
            diff = np.abs(pa.astype(np.int16) - pb.astype(np.int16))
            print(f"{case:22} {a:44} {b:44} {int(diff.max()):5d} {float(diff.mean()):7.3f} "
                  f"{bool(np.array_equal(pa, pb))}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.adapter_parity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("draw", help="draw the cases on every adapter named")
    d.add_argument("out", type=Path)
    d.add_argument("--adapters", default="all")
    d.add_argument("--dtypes", default="float32,float16")
    d.add_argument("--sd15", action="store_true", help="also full-size SD 1.5 (random weights)")
    c = sub.add_parser("compare", help="pixel differences between the files' pictures")
    c.add_argument("files", type=Path, nargs="+")
    args = parser.parse_args(argv)
    if args.command == "draw":
        draw(args.out, args.adapters, args.dtypes.split(","), args.sd15)
    else:
        compare(args.files)
    return 0


if __name__ == "__main__":
    sys.exit(main())

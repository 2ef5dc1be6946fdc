"""Write the shapes data set to a folder: PNGs plus captions.jsonl (file, caption, spec).

    python tools/make_dataset.py --out DIR --n N --seed S [--held-out]

A thin wrapper over tools/shapes.py (the same pictures the trainer draws in memory); written to
DIR.tmp and renamed when complete.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tools import shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--n", required=True, type=int)
    parser.add_argument("--seed", required=True, type=int)
    parser.add_argument("--held-out", action="store_true",
                        help="only the HELD_OUT (colour, shape) pairs, for evaluation")
    args = parser.parse_args()
    tmp = args.out.with_name(args.out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with (tmp / "captions.jsonl").open("w", encoding="utf-8") as index:
        for i, (image, text, spec) in enumerate(shapes.dataset(args.seed, args.n, args.held_out)):
            name = f"{i:06d}.png"
            Image.fromarray(image).save(tmp / name)
            index.write(json.dumps({"file": name, "caption": text,
                                    "spec": dataclasses.asdict(spec)}) + "\n")
            if (i + 1) % 1000 == 0 or i + 1 == args.n:
                print(f"{i + 1}/{args.n}", file=sys.stderr, flush=True)
    shutil.rmtree(args.out, ignore_errors=True)
    tmp.rename(args.out)


if __name__ == "__main__":
    main()

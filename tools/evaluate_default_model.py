"""Score the bundled shapes model with our pipeline: how often its pictures agree with their
prompts, on seen and on held-out colour/shape combinations.

    python tools/evaluate_default_model.py --out eval/ [--model DIR] [--prompts 8] [--seeds 1 2]

Prompts come from --prompt-seed (`select_prompts`), alternating the "plain" and "full"
templates. Every (prompt, seed) image is read back by tools.shapes.measure and judged by
tools.shapes.agrees. The shape itself is not measurable, so errors are counted for colour,
background, position and size. Writes DIR/evaluation.json (rates overall, per template, seen
vs held-out; attribute errors; every sample) and DIR/samples.png (failures framed in red), and
prints the summary. Image i is `python -m diffusion txt2img --prompt P --seed S` with the same
--model/--steps/--sampler/--cfg-scale (the numpy random source, batch size 1).

Cost: an image takes ~17 s on a 2-core lavapipe at 10 guided steps, so the defaults (8 + 8
prompts, 2 seeds: 32 images) take ~9 min there; `--prompts 2 --seeds 1` about 70 s.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tools import shapes

ATTRIBUTES = ("colour", "background", "position", "size")  # what measure() reads back
FALLBACK = {"steps": 10, "sampler": "DDIM", "cfg_scale": 5.0}  # when defaults.json is silent
CELL, TEXT_WIDTH = 128, 300


def select_prompts(seed: int, n: int, *, held_out: bool = False) -> list[str]:
    """n prompts, a function of `seed`: distinct (colour, shape) pairs, the seen ones or
    shapes.HELD_OUT (cycled when n exceeds them), in a seeded order, each with a random
    background of another colour, position and size; templates alternate plain, full, and
    swap on each pass over the pairs, so a cycled pair is asked in both templates."""
    rng = np.random.default_rng([seed, held_out])
    pairs = [(colour, shape) for colour in shapes.COLOURS for shape in shapes.SHAPES
             if ((colour, shape) in shapes.HELD_OUT) == held_out]
    order = rng.permutation(len(pairs))
    prompts = []
    for i in range(n):
        colour, shape = pairs[order[i % len(pairs)]]
        background = rng.choice([c for c in shapes.COLOURS if c != colour])
        template = shapes.TEMPLATES["plain" if (i + i // len(pairs)) % 2 == 0 else "full"]
        prompts.append(template.format(colour=colour, shape=shape, background=background,
                                       position=rng.choice(shapes.POSITIONS),
                                       size=rng.choice(shapes.SIZES)))
    return prompts


def template_of(prompt: str) -> str:
    """"plain" or "full": which of shapes.TEMPLATES `prompt` follows."""
    return "plain" if shapes.parse(prompt)["position"] is None else "full"


def mismatches(prompt: str, measured: Mapping[str, Any]) -> list[str]:
    """The attributes `prompt` states that `measured` (shapes.measure) reads otherwise."""
    stated = shapes.parse(prompt)
    return [key for key in ATTRIBUTES if stated[key] is not None and measured[key] != stated[key]]


def sample_sheet(samples: Sequence[Mapping[str, Any]], columns: int,
                 title: str = "") -> Image.Image:
    """A grid of `samples` (dicts: image, prompt, seed, agrees, mismatches, measured; optional
    held_out), `columns` images a row, the row's prompt beside it; an image that disagrees with
    its prompt is framed in red and what was read instead is listed under the prompt."""
    width = columns * CELL + TEXT_WIDTH
    heading = textwrap.wrap(title, width // 7)  # PIL's default font: ~6 px a character
    rows, top = -(-len(samples) // columns), 12 + 12 * len(heading) if title else 0
    sheet = Image.new("RGB", (width, top + rows * CELL), "white")
    pen = ImageDraw.Draw(sheet)
    pen.multiline_text((6, 6), "\n".join(heading), fill="black")
    for row in range(rows):
        group = samples[row * columns:(row + 1) * columns]
        y = top + row * CELL
        lines = textwrap.wrap(("[held out] " if group[0].get("held_out") else "")
                              + group[0]["prompt"], 44)
        for column, sample in enumerate(group):
            x = column * CELL
            sheet.paste(Image.fromarray(sample["image"]), (x, y))
            if not sample["agrees"]:
                pen.rectangle([x, y, x + CELL - 1, y + CELL - 1], outline=(255, 0, 0), width=3)
                read = ", ".join(f"{key} {sample['measured'][key]}"
                                 for key in sample["mismatches"])
                lines += textwrap.wrap(f"seed {sample['seed']}: {read}", 44)
        pen.multiline_text((columns * CELL + 6, y + 6), "\n".join(lines), fill="black")
    return sheet


def as_json(report: Mapping[str, Any]) -> str:
    """`report` as JSON, one line per entry of each section (readable and diffable)."""
    sections = []
    for key, value in report.items():
        if isinstance(value, dict):
            body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in value.items())
            text = f"{{\n{body}\n }}"
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            text = "[\n" + ",\n".join(f"  {json.dumps(v)}" for v in value) + "\n ]"
        else:
            text = json.dumps(value)
        sections.append(f" {json.dumps(key)}: {text}")
    return "{\n" + ",\n".join(sections) + "\n}\n"


def _rate(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    agreed = sum(s["agrees"] for s in samples)
    return {"agree": agreed, "total": len(samples),
            "rate": round(agreed / len(samples), 4) if samples else None}


def summarize(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Agreement rates (overall, per template, seen / held out) and, per group, how many images
    got each attribute wrong out of how many stated it."""
    groups = {"seen": [s for s in samples if not s["held_out"]],
              "held_out": [s for s in samples if s["held_out"]]}
    rates = {"overall": _rate(samples)}
    for template in shapes.TEMPLATES:
        rates[template] = _rate([s for s in samples if s["template"] == template])
        for name, group in groups.items():
            rates[f"{name}/{template}"] = _rate([s for s in group if s["template"] == template])
    rates.update({name: _rate(group) for name, group in groups.items()})
    errors = {name: {key: {"wrong": sum(key in s["mismatches"] for s in group),
                           "stated": sum(shapes.parse(s["prompt"])[key] is not None
                                         for s in group)} for key in ATTRIBUTES}
              for name, group in groups.items()}
    return {"rates": rates, "attribute_errors": errors, "not_measured": ["shape"]}


def evaluate(pipe: Any, prompts: Sequence[tuple[str, bool]], seeds: Sequence[int],
             **settings: Any) -> list[dict[str, Any]]:
    """One image per (prompt, held_out) x seed from our pipeline, measured and judged; progress
    on stderr. `settings`: StableDiffusion.generate keywords (steps, sampler, cfg_scale)."""
    total, start, samples = len(prompts) * len(seeds), time.perf_counter(), []
    for prompt, held_out in prompts:
        for seed in seeds:
            image = pipe.txt2img(prompt, seed=seed, **settings).images[0]
            measured = shapes.measure(image)
            samples.append(dict(prompt=prompt, seed=seed, held_out=held_out,
                                template=template_of(prompt),
                                agrees=shapes.agrees(prompt, measured),
                                mismatches=mismatches(prompt, measured),
                                measured={k: measured[k] for k in ATTRIBUTES}, image=image))
            done, elapsed = len(samples), time.perf_counter() - start
            print(f"[{done}/{total}] {elapsed:.0f}s, ~{elapsed / done * (total - done):.0f}s "
                  f"left: {'ok ' if samples[-1]['agrees'] else 'BAD'} {prompt!r} seed {seed}",
                  file=sys.stderr, flush=True)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", metavar="DIR",
                        help="model folder (default: the bundled one, diffusion/data/shapes-128)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="folder for evaluation.json and samples.png (created if missing)")
    parser.add_argument("--prompts", type=int, default=8, metavar="N",
                        help="prompts of seen combinations, and as many held-out ones (8)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2], metavar="SEED",
                        help="image seeds, one image per prompt and seed (1 2)")
    parser.add_argument("--prompt-seed", type=int, default=0, metavar="SEED",
                        help="chooses the prompts (0)")
    for name, kind, what in (("steps", int, "sampling steps"),
                             ("sampler", str, "WebUI sampler name"),
                             ("cfg_scale", float, "classifier-free guidance scale")):
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, metavar=name.upper(),
                            help=f"{what} (default: the model's defaults.json, else "
                                 f"{FALLBACK[name]})")
    args = parser.parse_args(argv)

    from diffusion import default_model_path, load_pipeline

    model = Path(args.model) if args.model else default_model_path()
    pipe = load_pipeline(model)
    settings = {name: next(v for v in (getattr(args, name), getattr(pipe.defaults, name),
                                       fallback) if v is not None)
                for name, fallback in FALLBACK.items()}
    prompts = [(p, False) for p in select_prompts(args.prompt_seed, args.prompts)]
    prompts += [(p, True) for p in select_prompts(args.prompt_seed, args.prompts, held_out=True)]
    samples = evaluate(pipe, prompts, args.seeds, **settings)
    report = {"model": str(model),
              "settings": {**settings, "seeds": args.seeds, "prompt_seed": args.prompt_seed,
                           "prompts_per_group": args.prompts},
              **summarize(samples)}
    print(as_json(report), end="")
    args.out.mkdir(parents=True, exist_ok=True)
    report["samples"] = [{k: v for k, v in s.items() if k != "image"} for s in samples]
    (args.out / "evaluation.json").write_text(as_json(report))
    rates = report["rates"]
    title = (f"{model.name}: {settings['steps']} steps, {settings['sampler']}, CFG "
             f"{settings['cfg_scale']:g}; agree: seen {rates['seen']['agree']}/"
             f"{rates['seen']['total']}, held out {rates['held_out']['agree']}/"
             f"{rates['held_out']['total']}; red frame = disagrees with its prompt")
    sample_sheet(samples, len(args.seeds), title).save(args.out / "samples.png")
    print(f"wrote {args.out / 'evaluation.json'} and {args.out / 'samples.png'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

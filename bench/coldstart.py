"""python -m bench.coldstart: whole `python -m diffusion txt2img` processes from cold (issue 51).

    python -m bench.coldstart ROOT OUT.json [--quick] [--models sd15,sdxl,flux]
                              [--flux-steps 4] [--timeout 300] [--n-iter 2]
                              [--trees main=/path/to/main,branch=.] [--rounds 1]

For each model it writes random full-size weights under ROOT in the layout users download
(bench._cold_files: an SD 1.5 single file in float32, an SDXL single file in float16, a FLUX.1
dev diffusers folder in bfloat16; the writing timed apart), then runs the CLI as a user would,
`python -m diffusion txt2img --model ... --fp16 --n-iter 2 --verbose` (two pictures: the
second is the warm picture of the same process; `--n-iter 1`: one picture, the issue's "a
second process ... for one picture"), in a child with empty caches of its own
(XDG_CACHE_HOME a fresh folder: ours and NVIDIA's / Mesa's shader caches; AVX_GPU_CACHE_DIR
and the drivers' cache variables unset), then a second process on the caches the first left
(the drivers' shader caches and gpucore.Warmup's kernel list). The weight files were just
written, so the OS page cache holds them (warm page cache: no disk reads are timed).
Python's bytecode is compiled once before the first child (PYTHONPYCACHEPREFIX under ROOT),
as an installed package has it.

Per process: the wall time from spawning the child to its exit (the interpreter's start
included), the seconds from the spawn at which each stderr line came (the first picture is
written when its `memory:` line comes), the sampling seconds the progress lines print, and
`--verbose`'s phase split (`time: import ... ; total ...`) and the seconds from its `time:`
line, printed after the last picture, to the exit; and how many kernels the Warmup lists in
the cache folder hold after it. `--quick`: the benches' tiny configs at
64x64 in 2 steps (a check of the command, not a measurement).

`--trees NAME=PATH,...` runs the same processes with each tree's packages first on the
child's PYTHONPATH (a checkout of main beside a branch), interleaved: each round runs every
tree's first and second process on a fresh cache of that tree's own, in the order of the
list, the next round in the reverse order. The rows go to the model's `runs` list.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["main"]

PROMPT = "a lighthouse on a cliff at dusk, waves below"
# model: (size, steps, extra CLI arguments); FLUX's steps come from --flux-steps
SETTINGS: dict[str, tuple[int, int, list[str]]] = {
    "sd15": (512, 20, ["--sampler", "Euler a", "--cfg-scale", "7"]),
    "sdxl": (1024, 20, ["--sampler", "Euler a", "--cfg-scale", "7"]),
    "flux": (1024, 4, []),
}
_PHASE = re.compile(r"([a-z][a-z ]*?) (-?[\d.]+) s \((\d+)\)")
_STEPS = re.compile(r"txt2img(?: (\d+)/\d+)?: (\d+) steps in ([\d.]+)s")


def parse_phases(line: str) -> dict[str, Any]:
    """`--verbose`'s `time:` line as {"phases": {name: {"s", "count"}}, "other_s", "total_s"}."""
    body = line.split("time:", 1)[1]
    phases = {m[1].strip(): {"s": float(m[2]), "count": int(m[3])}
              for m in _PHASE.finditer(body)}
    other = re.search(r"other (-?[\d.]+) s", body)
    total = re.search(r"total ([\d.]+) s", body)
    return {"phases": phases, "other_s": float(other[1]) if other else None,
            "total_s": float(total[1]) if total else None}


def summarize(lines: list[tuple[float, str]], wall: float) -> dict[str, Any]:
    """A child's timed stderr lines and wall seconds -> the row's figures."""
    memory = [t for t, line in lines if line.startswith("memory:")]
    sampling = [float(m[3]) for _, line in lines if (m := _STEPS.search(line))]
    loaded = next((t for t, line in lines if line.startswith("model:")), None)
    row: dict[str, Any] = {"wall_s": round(wall, 3), "model_line_s": loaded,
                           "picture_done_s": memory, "sampling_s": sampling}
    if memory:
        row["first_picture_s"] = memory[0]
    if len(memory) > 1:
        row["second_picture_s"] = round(memory[1] - memory[0], 3)
    timing = [line for _, line in lines if line.startswith("time:")]
    if timing:
        row.update(parse_phases(timing[-1]))
        # after the last line: the process's own teardown (threads, device, interpreter)
        row["exit_s"] = round(wall - max(t for t, line in lines if line.startswith("time:")), 3)
    return row


def run_child(args: list[str], env: dict[str, str], timeout: float,
              cwd: Path | None = None) -> dict[str, Any]:
    """Run `python -m diffusion ARGS` in a child (in folder `cwd`: `-m` imports from there
    first); its row (summarize) and stderr's lines."""
    lines: list[tuple[float, str]] = []
    with tempfile.TemporaryFile("w+") as stdout:  # the PNG paths; stderr is read as it comes
        start = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "diffusion", *args], env=env,
                                 stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=cwd)
        assert child.stderr is not None
        deadline = start + timeout
        killer = threading.Timer(timeout, child.kill)
        killer.start()
        for line in child.stderr:
            lines.append((round(time.perf_counter() - start, 3), line.rstrip()))
            print(f"  {lines[-1][0]:7.2f} {lines[-1][1]}", file=sys.stderr, flush=True)
        child.wait(timeout=max(10.0, deadline - time.perf_counter()))
        wall = time.perf_counter() - start
        killer.cancel()
        stdout.seek(0)
        written = stdout.read().split()
    row = summarize(lines, wall)
    row.update(returncode=child.returncode, stderr=[f"{t:7.2f} {s}" for t, s in lines],
               outputs=written)
    return row


def child_env(cache: str, bytecode: str, tree: Path | None = None) -> dict[str, str]:
    """This process's environment with every cache pointed into `cache` (ours, Mesa's, NVIDIA's
    through XDG_CACHE_HOME), bytecode kept under `bytecode` and `tree`'s packages first."""
    from gpucore import _cache

    placed = {_cache.DIR_ENV, *(variable for variable, _, _ in _cache.DRIVER_CACHES),
              "PYTHONDONTWRITEBYTECODE"}
    env = {k: v for k, v in os.environ.items() if k not in placed}
    env.update(XDG_CACHE_HOME=cache, PYTHONPYCACHEPREFIX=bytecode)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            [str(tree.resolve()), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))])
    return env


def _cli_args(model: str, path: str, out: Path, quick: bool, flux_steps: int,
              n_iter: int) -> list[str]:
    size, steps, extra = SETTINGS[model]
    if model == "flux":
        steps = flux_steps
    if quick:
        size, steps = 64, 2
    return ["txt2img", "--model", path, "--prompt", PROMPT, "--seed", "1",
            "--width", str(size), "--height", str(size), "--steps", str(steps), *extra,
            "--fp16", "--n-iter", str(n_iter), "--verbose", "--out", str(out / f"{model}.png")]


def _compile_bytecode(bytecode: str, roots: list[Path]) -> float:
    """Compile the packages' bytecode in `roots` into `bytecode` once (as an installed package
    has it)."""
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPYCACHEPREFIX": bytecode}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0",
                    *(str(root.resolve() / p) for root in roots
                      for p in ("gpucore", "gpustd", "diffusion"))],
                   env=env, check=False, capture_output=True)
    return round(time.perf_counter() - start, 3)


def listed_kernels(cache: Path) -> dict[str, int]:
    """{file: kernels} of the gpucore.Warmup lists a child left in its cache folder (what
    the next process begins building while it loads)."""
    counts = {}
    for path in sorted((cache / "avx-gpu").glob("kernels-*.json")):
        try:
            counts[path.name] = len(json.loads(path.read_text())["payload"]["kernels"])
        except (OSError, ValueError, KeyError, TypeError):
            counts[path.name] = -1  # unreadable: the next process ignores it too
    return counts


def _line(model: str, process: str, row: dict[str, Any]) -> str:
    def s(key: str) -> str:
        value = row.get(key)
        return f"{value:.2f}" if isinstance(value, float) else "-"

    phases = row.get("phases", {})
    wait = phases.get("compile wait", {}).get("s")
    return (f"{model:5} {process:14} whole {s('wall_s'):>6}  picture 1 at "
            f"{s('first_picture_s'):>6}  picture 2 {s('second_picture_s'):>5}  loaded at "
            f"{s('model_line_s'):>5}  exit {s('exit_s'):>4}  sampling {row.get('sampling_s')}"
            f"  compile wait {wait if wait is not None else '-'}"
            f"  listed {sum(row.get('kernels_listed', {}).values())}  rc {row.get('returncode')}")


def _schedule(trees: dict[str, Path | None], rounds: int
              ) -> list[tuple[str, int, list[str]]]:
    """(tree, round, processes) in the order run: every tree's first and second process, in
    the listed order, then the next round in the reverse order."""
    names = list(trees)
    return [(name, r, ["first", "second"]) for r in range(rounds)
            for name in (names if r % 2 == 0 else names[::-1])]


def run(root: Path, out_json: Path, *, quick: bool, models: list[str], flux_steps: int,
        timeout: float, n_iter: int = 2, trees: dict[str, Path | None] | None = None,
        rounds: int = 1) -> dict[str, Any]:
    from . import _cold_files

    trees = trees or {"": None}
    here = Path(__file__).resolve().parent.parent
    (root / "out").mkdir(parents=True, exist_ok=True)
    bytecode = str(root / "bytecode")
    result: dict[str, Any] = {
        "benchmark": "coldstart", "quick": quick, "page_cache": "warm", "n_iter": n_iter,
        "trees": {name: str(tree) for name, tree in trees.items() if tree is not None},
        "bytecode_s": _compile_bytecode(bytecode, [tree or here for tree in trees.values()]),
        "models": {}}
    table = []
    for model in models:
        entry: dict[str, Any] = {"written": _cold_files.write(model, root, quick)}
        result["models"][model] = entry
        print(f"{model}: wrote {entry['written']}", file=sys.stderr, flush=True)
        entry["args"] = _cli_args(model, entry["written"]["path"], root / "out", quick,
                                  flux_steps, n_iter)
        for name, number, processes in _schedule(trees, rounds):
            with tempfile.TemporaryDirectory(prefix=f"cold-{model}-", dir=root) as cache:
                env = child_env(cache, bytecode, trees[name])
                for process in processes:
                    # a tree's child runs outside every tree: only PYTHONPATH says whose code
                    row = run_child(entry["args"], env, timeout,
                                    None if trees[name] is None else root)
                    row["kernels_listed"] = listed_kernels(Path(cache))
                    if trees == {"": None}:
                        entry[process] = row
                    else:
                        entry.setdefault("runs", []).append(
                            {"tree": name, "round": number, "process": process, "row": row})
                    table.append(_line(model, f"{name} {process}".strip(), row))
                    out_json.write_text(json.dumps(result, indent=1))
                    if row["returncode"]:
                        print("\n".join(row["stderr"][-15:]), file=sys.stderr)
                        break
        if model == "flux" and not quick:  # its 33 GB would crowd the next model's files
            _remove(Path(entry["written"]["path"]))
    out_json.write_text(json.dumps(result, indent=1))
    for model, entry in result["models"].items():
        w = entry["written"]
        print(f"{model:5} wrote {w['bytes'] / 2**30:.1f} GiB in {w['write_s']:.1f} s")
    print("\n".join(table))
    return result


def _remove(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.coldstart", description=__doc__)
    parser.add_argument("root", type=Path, help="a folder for the weights and the caches")
    parser.add_argument("out", type=Path, help="the JSON written (after every process)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--models", default="sd15,sdxl,flux")
    parser.add_argument("--flux-steps", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a process")
    parser.add_argument("--n-iter", type=int, default=2, help="pictures a process (--n-iter)")
    parser.add_argument("--trees", default="", help="NAME=PATH,...: code trees to compare")
    parser.add_argument("--rounds", type=int, default=1, help="rounds over --trees")
    args = parser.parse_args(argv)
    trees = {name: Path(path) for name, _, path in
             (item.partition("=") for item in args.trees.split(",") if item)} or None
    run(args.root, args.out, quick=args.quick, models=args.models.split(","),
        flux_steps=args.flux_steps, timeout=args.timeout, n_iter=args.n_iter, trees=trees,
        rounds=args.rounds)


if __name__ == "__main__":
    main(sys.argv[1:])

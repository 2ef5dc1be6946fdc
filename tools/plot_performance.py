"""Ours vs PyTorch per workload, from the committed bench/results/*.json.

    .venv/bin/python -m tools.plot_performance [--png docs/performance.png] [--markdown]

Draws docs/performance.png (matplotlib: a maintainer tool, not a package dependency) and with
--markdown prints the rows docs/performance.md tabulates. Every figure comes from a JSON file
written by `python -m bench NAME --json ...`; the GPU named is the file's torch_device.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"


@dataclass
class Row:
    workload: str
    gpu: str
    ours_gpu_ms: float | None  # timestamp-query sum
    ours_wall_ms: float | None
    torch_ms: float  # wall where the bench has it, else CUDA-event GPU time
    torch_kind: str
    dispatches: int | None
    source: str
    baseline: str = "fp32"  # what torch ran: fp32 (TF32 off) or fp16

    @property
    def ours_ms(self) -> float:
        """What the ratio compares: wall time where measured, else GPU time."""
        return self.ours_wall_ms if self.ours_wall_ms is not None else float(self.ours_gpu_ms)

    @property
    def ratio(self) -> float:
        return self.torch_ms / self.ours_ms


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1e3 * seconds


def _gpu(data: dict[str, Any]) -> str:
    return data["environment"].get("torch_device", data["environment"]["adapter"]).replace(
        "NVIDIA ", "").replace(" 80GB HBM3", "")


def collect() -> list[Row]:
    """The rows the doc and the chart show (float32 unless named)."""
    rows: list[Row] = []
    for gpu in ("h100", "h200"):
        if (d := _load(f"unet-{gpu}.json")) is not None:
            for r in d["rows"]:
                if r["dtype"] != "float32":
                    continue
                mode = r.get("mode", "eager")
                torch_ms = r.get("torch_wall_ms", r.get("torch_ms"))
                rows.append(Row(f"UNet step 2x4x64x64 ({mode})", _gpu(d), r["ours_gpu_ms"],
                                r["ours_wall_ms"], torch_ms,
                                "wall" if "torch_wall_ms" in r else "events",
                                r.get("dispatches"), f"unet-{gpu}.json"))
        if (d := _load(f"vae-{gpu}.json")) is not None:
            for r in d["rows"]:
                rows.append(Row(f"VAE decode {r['image']} ({r['mode']})", _gpu(d),
                                r["ours_gpu_ms"], r["ours_wall_ms"], r["torch_wall_ms"], "wall",
                                r["dispatches"], f"vae-{gpu}.json"))
        if (d := _load(f"txt2img-{gpu}.json")) is not None:
            for r in d["rows"]:
                if r["dtype"] == "float32":  # older files: DDIM only, "diffusers_s"
                    sampler = r.get("sampler", "DDIM")
                    theirs = r.get("diffusers_fp32_s", r.get("diffusers_s"))
                    rows.append(Row(f"txt2img {r['size']}, {r['steps']} steps {sampler}",
                                    _gpu(d), _ms(r.get("ours_gpu_s")), 1e3 * r["ours_s"],
                                    1e3 * theirs, "wall", r.get("dispatches"),
                                    f"txt2img-{gpu}.json"))
        # float16 on the matrix units (Dawn) against torch fp16
        if (d := _load(f"unet-dawn-{gpu}.json")) is not None:
            for r in d["rows"]:
                if r["dtype"] == "float16" and r["mode"] == "replay":
                    rows.append(Row("UNet step 2x4x64x64 f16 (Dawn, replay)", _gpu(d),
                                    r["ours_gpu_ms"], r["ours_wall_ms"], r["torch_wall_ms"],
                                    "wall", r["dispatches"], f"unet-dawn-{gpu}.json", "fp16"))
        if (d := _load(f"txt2img-dawn-{gpu}.json")) is not None:
            for r in d["rows"]:
                if r["dtype"] == "float16" and r.get("diffusers_fp16_s"):
                    rows.append(Row(f"txt2img {r['size']}, {r['steps']} steps {r['sampler']} "
                                    "f16 (Dawn)", _gpu(d), _ms(r.get("ours_gpu_s")),
                                    1e3 * r["ours_s"], 1e3 * r["diffusers_fp16_s"], "wall",
                                    r.get("dispatches"), f"txt2img-dawn-{gpu}.json", "fp16"))
        if (d := _load(f"gemm-{gpu}.json")) is not None:
            wanted = {(4096, 4096, 4096), (4096, 1280, 320), (1024, 640, 640),
                      (8192, 2880, 320)}
            for r in d["rows"]:
                if (r["dtype"] == "float32" and r["layout"] == "nt"
                        and (r["m"], r["k"], r["n"]) in wanted):
                    rows.append(Row(f"GEMM f32 {r['m']}x{r['k']}x{r['n']} nt", _gpu(d),
                                    r["ours_gpu_ms"], None, r["baseline_ms"], "events", 1,
                                    f"gemm-{gpu}.json"))
    return rows


def markdown(rows: list[Row]) -> str:
    def ms(v: float | None) -> str:
        return "" if v is None else f"{v:.2f}" if v < 10 else f"{v:.1f}"

    out = ["| workload | GPU | ours GPU ms | ours wall ms | torch ms | ratio | dispatches | "
           "file |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        torch = f"{ms(r.torch_ms)} ({r.baseline}, {r.torch_kind})"
        out.append(f"| {r.workload} | {r.gpu} | {ms(r.ours_gpu_ms)} | {ms(r.ours_wall_ms)} | "
                   f"{torch} | {r.ratio:.2f} | {r.dispatches or ''} | {r.source} |")
    return "\n".join(out)


def _time(ms: float) -> str:
    return f"{ms / 1e3:.3g} s" if ms >= 1000 else f"{ms:.3g} ms"


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r.workload} [{r.gpu}, vs torch {r.baseline}]" for r in rows]
    rel = [r.ours_ms / r.torch_ms for r in rows]  # torch = 1
    fig, ax = plt.subplots(figsize=(10, 0.42 * len(rows) + 1.5))
    y = range(len(rows))
    ax.barh([i + 0.2 for i in y], [1.0] * len(rows), height=0.4, color="#999999",
            label="PyTorch CUDA = 1 (fp32, TF32 off; fp16 rows: fp16)")
    ax.barh([i - 0.2 for i in y], rel, height=0.4,
            color=["#2a7" if v <= 1 else "#d62" for v in rel],
            label="ours (f32: wgpu-native; f16: Dawn, matrix units)")
    for i, r in enumerate(rows):
        ax.text(rel[i] + 0.02, i - 0.2, f"{_time(r.ours_ms)} vs {_time(r.torch_ms)}",
                va="center", fontsize=7)
    ax.set_xlim(0, max(rel) * 1.35)
    ax.set_yticks(list(y), labels, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("time relative to PyTorch (lower is faster; wall time, GEMM rows GPU time)",
                  fontsize=9)
    ax.set_title("avx-gpu vs PyTorch, same GPU, same process (bench/results)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--png", type=Path,
                        default=RESULTS.parent.parent / "docs" / "performance.png")
    parser.add_argument("--markdown", action="store_true", help="print the table rows")
    args = parser.parse_args()
    rows = collect()
    if args.markdown:
        print(markdown(rows))
    plot(rows, args.png)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()

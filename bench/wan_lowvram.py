"""Wan under the memory modes at full size: a whole WanPipeline call (UMT5-XXL on the prompt
and the negative prompt, two guided steps, the whole VAE decode) of Wan 2.1 T2V 1.3B and Wan
2.2 TI2V 5B at 480x832, 81 frames, under --lowvram and --max-vram 12G, with random weights;
`wan21_14b_gguf`: the Wan 2.1 T2V 14B's transformer as a Q4_K GGUF written first
(bench._wan_gguf: random blocks) and read as the CLI reads `--model X.gguf`, straight to host
memory (its `gguf` row: write and load times, file size).

Per phase (text: both prompts through UMT5; steps: the sampling loop; decode: the VAE) each
row gives the pool's reserved and allocated peaks (Device.memory_stats, absolute: the
streamed weights on the GPU included) and the driver's peak (cudaMemGetInfo's use sampled
every 5 ms in that phase, above the level settled before the networks were loaded:
everything the process holds, Dawn's and the driver's own included), and the phase's wall
time; `step_ms` is each step's wall time (the first builds the kernels). `uploaded_gib`: the
weights the mode brought in over the call. The decode row's `memory_series`: seconds since
the text phase began, the driver's figure, the pool's in use and idle (GiB), ~150 points.

Weights: slices of one pool of normal(0, 0.02) values (norm scales 1 + those), float16 where
the adapter has shader-f16 (UMT5's `wo` float32, as the model keeps it); each network is
loaded, then moved to host memory (as the CLI loads for a memory mode), before the call. The
prompt's tokens are 40 random ids padded to 512 (a stand-in for the tokenizer). BENCH_MODELS
picks from wan21_1_3b, wan22_5b, wan21_14b_gguf; BENCH_MODES from lowvram, max_vram
(BENCH_BUDGET: its size, 12G); BENCH_STEPS: the steps (2). `--quick`: the bench's tiny configs
at 32x64, 5 frames, a 64 MiB budget (the 14B's: 256 wide, two blocks).
"""

from __future__ import annotations

import gc
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, cast

import numpy as np

import gpucore

from . import _harness
from .sdxl import _PeakMemory, _settled_use
from .wan import MODELS, TINY, TINY_UMT5, UMT5_XXL

GIB = float(1 << 30)
COLUMNS = ["model", "mode", "phase", "wall_ms", "peak_reserved_gib", "peak_allocated_gib",
           "driver_peak_gib", "uploaded_gib", "error"]
# Wan-AI/Wan2.1-T2V-14B-Diffusers, transformer/config.json
WAN21_14B: dict[str, Any] = dict(MODELS["wan21_1_3b"][0], num_attention_heads=40,
                                 ffn_dim=13824, num_layers=40)
SCHEDULER = dict(_class_name="UniPCMultistepScheduler", prediction_type="flow_prediction",
                 use_flow_sigmas=True, flow_shift=3.0, num_train_timesteps=1000, solver_order=2)


class _Tokens:
    """The tokenizer's place: `encode` -> (ids, mask), 40 random ids then padding."""

    def encode(self, prompts: list[str], length: int) -> tuple[np.ndarray, np.ndarray]:
        ids = np.zeros((len(prompts), length), np.int64)
        ids[:, :40] = np.random.default_rng(len(prompts[0])).integers(1, 1000, (len(prompts), 40))
        return ids, (ids != 0).astype(np.int64)


def _random(model: Any, pool: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    state = {}
    for name, p in model.named_parameters():
        values = pool[np.dtype(p.dtype).name]
        n = int(np.prod(p.shape))
        start = int(rng.integers(0, values.size - min(n, values.size) + 1))
        flat = values[start:start + n] if n <= values.size else np.resize(values, n)
        norm = len(p.shape) == 1 and "norm" in name
        state[name] = (flat + 1 if norm else flat).reshape(p.shape)
    return state


def _loaded(kind: Any, config: dict[str, Any], dtype: Any, device: gpucore.Device,
            pool: dict[str, np.ndarray]) -> Any:
    from gpustd.nn import deferred
    from gpustd.nn.offload import offload

    with deferred():
        model = kind(dict(config), dtype=dtype, device=device)
        model.load_state_dict(_random(model, pool), dtype=None)
    offload(model)
    device.empty_pool()
    return model


def _gguf_transformer(quick: bool, dtype: Any, device: gpucore.Device,
                      facts: dict[str, Any]) -> Any:
    """The 14B (quick: 256 wide, two blocks) written as a Q4_K GGUF of random blocks, then
    loaded as `txt2vid --model X.gguf` under a memory mode loads it: to host memory."""
    from diffusion.loaders.component import load_component
    from diffusion.loaders.wan.file import load_wan_file
    from diffusion.models.wan import WanTransformer3DModel
    from gpustd.nn import deferred
    from gpustd.nn.offload import offload

    from ._wan_gguf import write_random_wan_gguf

    config = (dict(TINY["wan21_1_3b"][0], num_attention_heads=2, attention_head_dim=128,
                   freq_dim=256, ffn_dim=512) if quick else WAN21_14B)
    with deferred():  # the shapes only: nothing is allocated until values arrive
        shapes = {n: tuple(p.shape) for n, p in WanTransformer3DModel(
            dict(config), dtype=dtype, device=device).named_parameters()}
    folder = Path(os.environ.get("BENCH_GGUF_DIR") or tempfile.mkdtemp(prefix="bench-wan-"))
    path = folder / "wan2.1-t2v-14b-Q4_K_S.gguf"
    begin = time.perf_counter()
    facts.update(write_random_wan_gguf(path, shapes), write_s=time.perf_counter() - begin)
    begin = time.perf_counter()
    weights = load_wan_file(path, dtype="float16" if dtype == np.float16 else "float32")
    with deferred():
        model = load_component(WanTransformer3DModel(weights.config, dtype=dtype,
                                                     device=device), weights, to_host=True)
    offload(model)
    device.empty_pool()
    facts["load_s"] = time.perf_counter() - begin
    print(f"gguf: {json.dumps(facts)}", flush=True)
    return model


def _pipeline(name: str, quick: bool, device: gpucore.Device, facts: dict[str, Any]) -> Any:
    from diffusion.models.t5 import UMT5EncoderModel
    from diffusion.models.wan import WanTransformer3DModel
    from diffusion.models.wan_vae import AutoencoderKLWan
    from diffusion.pipelines.video import WanPipeline

    gguf = name == "wan21_14b_gguf"
    dit, vae, _ = (TINY if quick else MODELS)["wan21_1_3b" if gguf else name]
    dtype = np.float16 if device.has_f16 else np.float32
    values = np.random.default_rng(0).normal(0, 0.02, 1 << (16 if quick else 26))
    pool: dict[str, np.ndarray] = {"float16": values.astype(np.float16),
                                   "float32": values.astype(np.float32)}
    return WanPipeline(
        text_encoder=_loaded(UMT5EncoderModel, TINY_UMT5 if quick else UMT5_XXL, dtype,
                             device, pool),
        transformer=(_gguf_transformer(quick, dtype, device, facts) if gguf else
                     _loaded(WanTransformer3DModel, dit, dtype, device, pool)),
        vae=_loaded(AutoencoderKLWan, vae, dtype, device, pool), tokenizer=cast(Any, _Tokens()),
        scheduler_config=SCHEDULER, expand_timesteps=name == "wan22_5b", offload=True)


class _Phases:
    """Phase boundaries (perf_counter) and each phase's pool peaks, the driver sampled."""

    def __init__(self, device: gpucore.Device, cuda: Any, baseline: float) -> None:
        self.device, self.cuda, self.baseline = device, cuda, baseline
        self.marks: list[tuple[str, float, float, float, float]] = []
        self.samples: list[tuple[float, float, float, float]] = []
        self.steps: list[float] = []
        self._stop = threading.Event()
        self.current = ("", 0.0)

    def begin(self, phase: str) -> None:
        self.device.synchronize()
        self.device.reset_peak_memory()
        self.current = (phase, time.perf_counter())

    def end(self) -> None:
        self.device.synchronize()
        stats = self.device.memory_stats()
        phase, start = self.current
        self.marks.append((phase, start, time.perf_counter(), stats.peak_reserved / GIB,
                           stats.peak_allocated / GIB))

    def _poll(self) -> None:
        while not self._stop.wait(0.005):
            stats = self.device.memory_stats()
            self.samples.append((time.perf_counter(), _PeakMemory.used(self.cuda) - self.baseline,
                                 stats.allocated / GIB, stats.pooled / GIB))

    def __enter__(self) -> _Phases:
        if self.cuda is not None:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.cuda is not None:
            self._stop.set()
            self._thread.join()

    def driver_peak(self, start: float, stop: float) -> float:
        inside = [used for t, used, _, _ in self.samples if start <= t <= stop]
        return max(inside) if inside else float("nan")

    def series(self, n: int = 150) -> list[list[float]]:
        """(s since the first phase, driver, pool in use, pool idle; GiB), about n points."""
        begin = self.marks[0][1] if self.marks else 0.0
        kept = self.samples[::max(1, len(self.samples) // n)]
        return [[round(t - begin, 3), round(d, 3), round(a, 3), round(p, 3)]
                for t, d, a, p in kept]


def _run(pipe: Any, size: dict[str, int], device: gpucore.Device, cuda: Any,
         baseline: float, steps: int) -> tuple[list[dict[str, Any]], list[float]]:
    phases = _Phases(device, cuda, baseline)
    prompt_states, decode = pipe.prompt_states_each, pipe.decode

    def text(*args: Any, **kw: Any) -> Any:
        phases.begin("text")  # the prompt and the negative prompt in one pass
        out = prompt_states(*args, **kw)
        phases.end()
        phases.begin("steps")
        return out

    def decoded(latents: Any) -> Any:
        phases.end()
        phases.begin("decode")
        out = decode(latents)
        phases.end()
        return out

    last = [0.0]

    def step(i: int, n: int, _: Any) -> None:
        now = time.perf_counter()
        phases.steps.append((now - (last[0] or phases.current[1])) * 1e3)
        last[0] = now

    pipe.prompt_states_each, pipe.decode = text, decoded
    try:
        with phases:
            frames = pipe("a cat walks on the grass", negative_prompt="blurry",
                          num_inference_steps=steps, guidance_scale=5.0, seed=1,
                          callback=step, **size)
    finally:
        del pipe.prompt_states_each, pipe.decode
    assert np.isfinite(frames).all()
    rows = [{"phase": phase, "wall_ms": (stop - start) * 1e3, "peak_reserved_gib": reserved,
             "peak_allocated_gib": allocated, "driver_peak_gib": phases.driver_peak(start, stop)}
            for phase, start, stop, reserved, allocated in phases.marks]
    if phases.samples:
        rows[-1]["memory_series"] = phases.series()
    return rows, phases.steps


def run(quick: bool = False) -> dict[str, Any]:
    from diffusion.pipelines.sd.memory import MemoryMode, parse_size

    device = gpucore.default_device()
    cuda = _harness.torch_cuda()
    size = (dict(height=32, width=64, num_frames=5) if quick else
            dict(height=480, width=832, num_frames=81))
    budget = parse_size(os.environ.get("BENCH_BUDGET", "64M" if quick else "12G"))
    models = [m for m in os.environ.get("BENCH_MODELS", "wan21_1_3b,wan22_5b").split(",") if m]
    modes = [m for m in os.environ.get("BENCH_MODES", "lowvram,max_vram").split(",") if m]
    steps = int(os.environ.get("BENCH_STEPS", "2"))
    rows: list[dict[str, Any]] = []
    for name in models:
        baseline = _settled_use(device, cuda) if cuda else float("nan")
        begin = time.perf_counter()
        facts: dict[str, Any] = {}
        pipe = _pipeline(name, quick, device, facts)
        print(f"{name}: loaded in {time.perf_counter() - begin:.1f} s", flush=True)
        if facts:
            rows.append({"model": name, "phase": "gguf", **facts})
        for label in modes:
            mode = MemoryMode(lowvram=True) if label == "lowvram" else MemoryMode(
                max_vram=budget)
            head = {"model": name, "mode": mode.label}
            try:
                pipe.set_memory_mode(mode)  # (the mode before released: every unit restored)
                pipe._memory.residency.evict_all()  # each mode starts from host memory
                device.empty_pool()
                phase_rows, step_ms = _run(pipe, size, device, cuda, baseline, steps)
                uploaded = pipe._memory.residency.uploaded / GIB
                part = [{**head, **row, "uploaded_gib": uploaded} for row in phase_rows]
                part[1]["step_ms"] = step_ms
            except Exception as exc:  # an out-of-memory mode loses its rows only
                part = [{**head, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}]
            gc.collect()
            device.empty_pool()
            print(json.dumps(part), flush=True)  # a cut-off run keeps it
            rows += part
        del pipe
        gc.collect()
        device.empty_pool()
    return {"benchmark": "wan_lowvram", "environment": _harness.environment(device),
            "notes": __doc__, "size": size, "budget_gib": budget / GIB, "columns": COLUMNS,
            "rows": rows}

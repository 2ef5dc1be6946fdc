"""Wan video at full size: one sampling step of Wan 2.1 T2V 1.3B (480x832, 81 frames) and of
Wan 2.2 TI2V 5B (704x1280, 121 frames), the VAE decode of latents of those shapes, and one
prompt through UMT5-XXL, random weights at the real configs, ours against diffusers /
transformers bf16 in one process.

A step is what WanPipeline runs with guidance: the transformer twice on batch 1, once with
the prompt's context and once with the negative prompt's (512 text tokens each; ours reads
the contexts `encode_text` made once per run, as our pipeline does). The decode: random
latents (1, z_dim, F, h, w) through the VAE, ours one latent frame at a time (its chunked
decode, its chunks from the third on replayed) against `AutoencoderKLWan.decode` bf16.
UMT5-XXL: 512 token ids, the first 40 unmasked (a prompt padded as WanPipeline pads it), to
the last hidden states, also checked against the reference in float32 (`rel_err_fp32`).

Weights: torch draws them once on its device (seed 0; transformer normal(0, 0.02), norm
scales 1 + normal(0, 0.02); the text encoder as T5 initializes it, `_t5_statistics`; the VAE
torch's default initialization),
times the reference in bf16 (the modules from_pretrained keeps float32 kept so: Wan's rotary
tables, time embedder and norms, T5's `wo`), hands them to the host one tensor at a time as
float16 and frees its copy; ours loads them (float16 where the adapter has shader-f16,
float32 otherwise).
To keep the whole run near 150 s on an H100, each side is timed once, after a warm-up call
that runs the same kernels on less work (one guidance pass of the step, the first two latent
frames of the decode); the timed call gives the output and the peak memory, ours' with its
timestamp queries on.

BENCH_MODELS picks them, comma-separated, from wan21_1_3b, umt5, wan22_5b (the default: all, in
that order); BENCH_PARTS the parts, from step, decode, encode (default: all).
BENCH_STEP_REPEAT=N times ours' step N more times by the wall clock alone (no timestamps or
memory sampler), then once with timestamps for its ten longest kernels (`repeat_*` fields of
the step's row). BENCH_DECODE_EAGER=1 adds a row for each decode run eagerly, every chunk
through the ops (`mode` eager beside replay), timed after the replayed one.
BENCH_UMT5_WEIGHTS=normal draws UMT5's weights normal(0, 0.02) as the transformer's (the run of
2026-11-26, whose 0.97 they explain: see `_t5_statistics`). BENCH_DECODE_COPIES=1 adds a decode
row (`mode` replay, tap copies) run as before the causal convolutions read their frames in
place: each temporal tap's frames copied first (`_wan_memory.tap_copies`), timed after the
in-place one. BENCH_VAE_FILE=1 has ours read the VAE from a file in ComfyUI's layout (the
reference's bf16 weights written as `wan2.2_vae.safetensors` / `wan_2.1_vae.safetensors`,
through the loader `--vae` uses). Each timed row also says where the memory went:
`peak_reserved_gib` (the pool's buffers in use and idle, at their peak), `driver_before_gib` /
`driver_after_gib` (the driver's count before the call and once it is done, the device settled
each time) and `memory_series` (`_wan_memory.MemorySeries`: ms, driver, pool in use, pool idle,
in GiB, ~120 points; the driver's figures above the level before loading, the pool's absolute).
Each row (step, decode, encode) is caught on its own: an out-of-memory part loses its row only,
recorded with its error. `--quick`: tiny configs (a smoke run on any adapter).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import gpucore
import gpustd

from . import _harness, _wan_memory
from .sdxl import _PeakMemory, _settled_use

GIB = float(1 << 30)
COLUMNS = ["model", "part", "impl", "mode", "dtype", "dispatches", "rel_err", "rel_err_fp32",
           "gpu_ms", "wall_ms", "peak_gib", "peak_reserved_gib", "driver_before_gib",
           "driver_step_peak_gib", "driver_after_gib", "vs_bf16", "error"]
PARTS = ("step", "decode", "encode")

# Wan-AI/Wan2.1-T2V-1.3B-Diffusers, transformer/config.json
WAN21_1_3B: dict[str, Any] = dict(
    patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
    out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30,
    cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
# Wan-AI/Wan2.2-TI2V-5B-Diffusers, transformer/config.json
WAN22_5B: dict[str, Any] = dict(WAN21_1_3B, num_attention_heads=24, in_channels=48,
                                out_channels=48, ffn_dim=14336)
# vae/config.json: Wan 2.1's is AutoencoderKLWan's defaults; Wan 2.2's (latents statistics
# left at 0 / 1: the bench decodes latents as given)
VAE21: dict[str, Any] = dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                             temperal_downsample=[False, True, True])
VAE22: dict[str, Any] = dict(
    base_dim=160, decoder_base_dim=256, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
    temperal_downsample=[False, True, True], is_residual=True, patch_size=2, in_channels=12,
    out_channels=12, scale_factor_spatial=16, latents_mean=[0.0] * 48, latents_std=[1.0] * 48)
# google/umt5-xxl (Wan's text_encoder/config.json)
UMT5_XXL: dict[str, Any] = dict(
    vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
    relative_attention_num_buckets=32, relative_attention_max_distance=128,
    feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, dropout_rate=0.0,
    tie_word_embeddings=False)

# (transformer config, VAE config, latent shape (C, F, h, w)) of each model, full and tiny
_TINY_DIT = dict(num_attention_heads=2, attention_head_dim=12, text_dim=32, freq_dim=16,
                 ffn_dim=40, num_layers=2, rope_max_seq_len=64)
MODELS: dict[str, tuple[dict[str, Any], dict[str, Any], tuple[int, ...]]] = {
    "wan21_1_3b": (WAN21_1_3B, VAE21, (16, 21, 60, 104)),  # 81 frames of 480 x 832
    "wan22_5b": (WAN22_5B, VAE22, (48, 31, 44, 80)),  # 121 frames of 704 x 1280
}
TINY: dict[str, tuple[dict[str, Any], dict[str, Any], tuple[int, ...]]] = {
    "wan21_1_3b": (dict(WAN21_1_3B, **_TINY_DIT, in_channels=4, out_channels=4),
                   dict(VAE21, base_dim=8, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                        latents_mean=[0.0] * 4, latents_std=[1.0] * 4), (4, 2, 2, 4)),
    "wan22_5b": (dict(WAN22_5B, **_TINY_DIT, in_channels=6, out_channels=6),
                 dict(VAE22, base_dim=8, decoder_base_dim=12, z_dim=6, dim_mult=[1, 2, 2, 2],
                      num_res_blocks=1, latents_mean=[0.0] * 6, latents_std=[1.0] * 6),
                 (6, 2, 2, 2)),
}
TINY_UMT5 = dict(UMT5_XXL, vocab_size=120, d_model=32, d_kv=8, d_ff=37, num_layers=2,
                 num_heads=4, relative_attention_num_buckets=8,
                 relative_attention_max_distance=20)


def _randomize(ref: Any, torch: Any) -> Any:
    """normal(0, 0.02) weights, 1 + normal(0, 0.02) norm scales, as bench/dit_families."""
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if p.ndim == 1 and "norm" in name and name.endswith("weight"):
                p.normal_(1.0, 0.02)
            else:
                p.normal_(0.0, 0.02)
    return ref


def _t5_statistics(ref: Any, torch: Any) -> Any:
    """UMT5's weights drawn as T5 initializes them (transformers' `T5PreTrainedModel.
    _init_weights`, factor 1), norm scales 1 + normal(0, 0.02). T5's attention has no
    1/sqrt(d_kv) scale: q's std (d_model d_kv)^-1/2 holds it. normal(0, 0.02) for every
    weight instead (q 10x too large at d_model 4096) gives q.k scores of std ~13: each
    softmax is nearly one key, a rounding difference picks another and the difference about
    doubles per layer, so after 24 layers torch's own bf16 and fp32 outputs disagree (0.97 of
    the output's range; on CPU, 4 layers: bf16 0.18, fp16 0.03 off fp32 and growing)."""
    cfg = ref.config
    d, kv, ff = cfg.d_model, cfg.d_kv, cfg.d_ff
    std = {"q": (d * kv) ** -0.5, "k": d ** -0.5, "v": d ** -0.5,
           "o": (cfg.num_heads * kv) ** -0.5, "relative_attention_bias": d ** -0.5,
           "wi_0": d ** -0.5, "wi_1": d ** -0.5, "wo": ff ** -0.5, "shared": 1.0,
           "embed_tokens": 1.0}
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.02)
            else:
                p.normal_(0.0, std[name.split(".")[-2]])
    return ref


def _built(make: Callable[[], Any], dev: str, randomize: bool) -> Any:
    """`make()` built on `dev` in bf16 as diffusers / transformers load it, its weights drawn
    there (seed 0)."""
    import torch

    torch.manual_seed(0)
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(dev):
            ref = make()
    finally:
        torch.set_default_dtype(saved)
    # bf16 but for the modules from_pretrained(torch_dtype=torch.bfloat16) keeps float32
    # (`_keep_in_fp32_modules`: Wan's rotary tables, time embedder and norms; T5's `wo`)
    keep = tuple(getattr(ref, "_keep_in_fp32_modules", None) or ())
    with torch.no_grad():
        for name, tensor in [*ref.named_parameters(), *ref.named_buffers()]:
            kept = any(module in name.split(".") for module in keep)
            tensor.data = tensor.data.to(torch.float32 if kept else torch.bfloat16)
    ref = ref.eval()
    return _randomize(ref, torch) if randomize else ref


class _Part:
    """One row pair: the reference's module and call, ours' module and call, the inputs."""

    def __init__(self, name: str, part: str, quick: bool) -> None:
        self.name, self.part = name, part
        rng = np.random.default_rng(0)
        self.inputs: dict[str, Any]
        if name == "umt5":
            self.tied = True  # (set again by `reference`)
            length, prompt = (12, 5) if quick else (512, 40)
            self.config = TINY_UMT5 if quick else UMT5_XXL
            self.inputs = {"ids": rng.integers(0, self.config["vocab_size"], (1, length)),
                           "mask": (np.arange(length) < prompt)[None].astype(np.int64)}
            return
        dit, vae, latent = (TINY if quick else MODELS)[name]
        self.config = dit if part == "step" else vae
        if part == "step":
            text = 12 if quick else 512
            self.inputs = {"latents": rng.standard_normal((1, *latent)),
                           "t": np.array([700.0], np.float32),
                           **{key: rng.standard_normal((1, text, dit["text_dim"]))
                              for key in ("positive", "negative")}}
        else:
            self.inputs = {"latents": rng.standard_normal((1, vae["z_dim"], *latent[1:]))}

    def reference(self, dev: str) -> Any:
        import diffusers
        import transformers

        config = dict(self.config)
        if self.name == "umt5":
            import torch

            normal = os.environ.get("BENCH_UMT5_WEIGHTS") == "normal"  # the draw of 2026-11-26
            ref = _built(lambda: transformers.UMT5EncoderModel(
                transformers.UMT5Config(**config)), dev, normal)
            ref = ref if normal else _t5_statistics(ref, torch)
            # ours reads `shared`; a transformers that left the stack its own table (drawn
            # apart) would compare two models
            self.tied = ref.encoder.embed_tokens.weight is ref.shared.weight
            ref.encoder.embed_tokens.weight = ref.shared.weight
            return ref
        if self.part == "step":
            return _built(lambda: diffusers.WanTransformer3DModel(**config), dev, True)
        return _built(lambda: diffusers.AutoencoderKLWan(**config), dev, False)

    def reference_call(self, ref: Any, x: dict[str, Any], warm: bool = False) -> Any:
        """The reference's call; `warm`: its warm-up, the same kernels on less work (one
        guidance pass of the step; the decode's first two latent frames)."""
        import torch

        if self.name == "umt5":
            return ref(input_ids=x["ids"], attention_mask=x["mask"]).last_hidden_state
        if self.part == "decode":
            return ref.decode(x["latents"][:, :, :2] if warm else x["latents"]).sample
        return torch.stack([ref(hidden_states=x["latents"], timestep=x["t"],
                                encoder_hidden_states=x[key]).sample
                            for key in ("positive", "negative")[:1 if warm else 2]])

    def ours(self, dtype: Any, device: gpucore.Device) -> Any:
        from diffusion.models.t5 import UMT5EncoderModel
        from diffusion.models.wan import WanTransformer3DModel
        from diffusion.models.wan_vae import AutoencoderKLWan

        kind = (UMT5EncoderModel if self.name == "umt5" else
                WanTransformer3DModel if self.part == "step" else AutoencoderKLWan)
        return kind(dict(self.config), dtype=dtype, device=device)

    def ours_call(self, ours: Any, dtype: Any, device: gpucore.Device, replay: bool = True
                  ) -> tuple[Callable[[], list[Any]], Callable[[], list[Any]]]:
        """(the timed call, its warm-up as `reference_call`'s), inputs already on the
        device; the step reads the contexts `encode_text` made once, as our pipeline does;
        `replay=False`: the decode's chunks all eager."""
        x = self.inputs
        if self.name == "umt5":
            def encode() -> list[Any]:
                return [ours(x["ids"], x["mask"])]
            return encode, encode
        latents = gpustd.asarray(x["latents"], dtype=dtype, device=device)
        if self.part == "decode":
            first = gpustd.asarray(x["latents"][:, :, :2], dtype=dtype, device=device)
            return (lambda: [ours.decode(latents, replay=replay)],
                    lambda: [ours.decode(first)])
        contexts = [ours.encode_text(gpustd.asarray(x[key], dtype=dtype, device=device))
                    for key in ("positive", "negative")]
        return (lambda: [ours(latents, x["t"], None, context=c) for c in contexts],
                lambda: [ours(latents, x["t"], None, context=contexts[0])])


def _on_torch(x: dict[str, Any], tdtype: Any, dev: str) -> dict[str, Any]:
    import torch

    return {key: torch.from_numpy(value).to(dev) if value.dtype.kind in "iu" or key == "t"
            else torch.from_numpy(value).to(dev, tdtype) for key, value in x.items()}


def _read(outputs: list[Any]) -> np.ndarray:
    return np.stack([np.asarray(out.numpy(), np.float64) for out in outputs])


def _one_part(part: _Part, device: gpucore.Device, cuda: Any) -> list[dict[str, Any]]:
    import torch

    label = {"model": part.name, "part": part.part}
    dtype = np.dtype(np.float16 if device.has_f16 else np.float32)
    dev = "cuda" if cuda else "cpu"
    tdtype = torch.bfloat16 if cuda else torch.float32
    ref = part.reference(dev)
    if not cuda:
        ref = ref.float()  # the reference on the CPU: float32
    x = _on_torch(part.inputs, tdtype, dev)
    with torch.no_grad():
        part.reference_call(ref, x, warm=True)
        if cuda:  # timed once, after the warm-up
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(
                enable_timing=True)
            begin = time.perf_counter()
            start.record()
        out = part.reference_call(ref, x)
        if cuda:
            end.record()
            torch.cuda.synchronize()
            wall = (time.perf_counter() - begin) * 1e3
            reference = {**label, "impl": "reference", "dtype": "bfloat16",
                         "gpu_ms": start.elapsed_time(end), "wall_ms": wall,
                         "peak_gib": torch.cuda.max_memory_allocated() / GIB}
            print(f"reference {part.name} {part.part}: {wall:.1f} ms", flush=True)
        else:
            reference = {**label, "impl": "reference", "dtype": "float32"}
        expected = out.float().cpu().numpy()
        out = None
        truth = None
        if cuda and part.name == "umt5":  # the reference again in float32, bf16's error
            truth = part.reference_call(ref.float(), x).cpu().numpy()
            reference.update(rel_err=_relative(expected, truth), tied=part.tied)
    wdtype = torch.float16 if dtype == np.float16 else torch.float32
    from_file = part.part == "decode" and os.environ.get("BENCH_VAE_FILE") == "1"
    weights = (_wan_memory.vae_from_file(ref, dict(part.config), dtype) if from_file else
               {k: v.detach().to(wdtype).cpu().numpy() for k, v in ref.state_dict().items()})
    del ref, x  # torch's copy freed before ours loads
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    device.empty_pool()
    settled = _settled_use(device, cuda) if cuda else float("nan")
    device.reset_peak_memory()
    base = device.memory_stats().allocated
    ours = part.ours(dtype, device)
    # (None: each parameter its own dtype, UMT5's float32 `wo` included)
    ours.load_state_dict(weights, dtype=None if part.name == "umt5" else dtype)
    del weights
    gc.collect()
    fn, warm = part.ours_call(ours, dtype, device)
    warm()  # kernel builds, autotuning
    rows = [reference]
    decode = part.part == "decode"
    modes = ["replay"] + [mode for mode, env in (("eager", "BENCH_DECODE_EAGER"),
                                                 ("replay, tap copies", "BENCH_DECODE_COPIES"))
                          if decode and os.environ.get(env) == "1"]
    for mode in modes:
        if mode == "eager":
            fn = part.ours_call(ours, dtype, device, replay=False)[0]
        copies = _wan_memory.tap_copies() if "copies" in mode else contextlib.nullcontext()
        with copies:
            got, figures = _timed_ours(fn, device, cuda, settled, base)
        row = {**label, "impl": "ours", **({"mode": mode} if decode else {}),
               **({"weights": "ComfyUI-layout file"} if from_file else {}),
               "dtype": dtype.name, **figures,
               "rel_err": _relative(got.reshape(expected.shape), expected)}
        if truth is not None:
            row["rel_err_fp32"] = _relative(got.reshape(truth.shape), truth)
        if "wall_ms" in reference:
            row["vs_bf16"] = reference["wall_ms"] / row["wall_ms"]
        rows.append(row)
    if part.part == "step" and int(os.environ.get("BENCH_STEP_REPEAT", "0")) > 0:
        rows[-1].update(_repeated(fn, device, int(os.environ["BENCH_STEP_REPEAT"])))
    del ours, fn, warm
    gc.collect()
    device.empty_pool()
    return rows


def _repeated(fn: Callable[[], list[Any]], device: gpucore.Device, times: int
              ) -> dict[str, Any]:
    """BENCH_STEP_REPEAT: `fn` run `times` more times after the timed row, each timed by the
    wall clock alone (no timestamps, no memory sampler: the steady state a video's later steps
    see), then once more with timestamps for the GPU time of each kernel (the ten longest)."""
    walls = []
    for _ in range(times):
        device.synchronize()
        begin = time.perf_counter()
        fn()
        device.synchronize()
        walls.append((time.perf_counter() - begin) * 1e3)
    figures: dict[str, Any] = {"repeat_wall_ms": walls}
    if device.has_timestamps:
        with device.profile() as prof:
            fn()
        device.synchronize()
        ranked = list(prof.summary().items())[:10]  # slowest first
        figures["repeat_gpu_ms"] = prof.total_ns() / 1e6
        figures["repeat_kernels"] = {name: {"calls": calls, "ms": ns / 1e6}
                                     for name, (calls, ns) in ranked}
    print(f"step repeated: wall {[round(w) for w in walls]} ms, "
          f"{json.dumps(figures.get('repeat_kernels', {}), default=float)}", flush=True)
    return figures


def _relative(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(got - expected).max() / np.abs(expected).max())


def _timed_ours(fn: Callable[[], list[Any]], device: gpucore.Device, cuda: Any,
                settled: float, base: int) -> tuple[np.ndarray, dict[str, Any]]:
    """`fn()` timed once (its timestamps on): (its outputs read back, the row's figures).
    `dispatches` counts those the ops encode (a replay's are not)."""
    device.synchronize()
    before = _wan_memory.settled(device, lambda: _PeakMemory.used(cuda)) - settled if cuda else (
        float("nan"))
    device.reset_peak_memory()
    timestamps = device.profile() if device.has_timestamps else contextlib.nullcontext()
    series = (_wan_memory.MemorySeries(device, lambda: _PeakMemory.used(cuda), settled) if cuda
              else contextlib.nullcontext())
    with _PeakMemory(cuda, settled) as driver, _harness.counting(device) as counts, series:
        begin = time.perf_counter()
        with timestamps as prof:
            outputs = fn()
        device.synchronize()
        wall = (time.perf_counter() - begin) * 1e3
    gpu = prof.total_ns() / 1e6 if prof is not None else float("nan")
    stats = device.memory_stats()
    after = _wan_memory.settled(device, lambda: _PeakMemory.used(cuda)) - settled if cuda else (
        float("nan"))
    return _read(outputs), {
        "gpu_ms": gpu, "wall_ms": wall,
        "dispatches": sum(v for k, v in counts.items() if k != "copy"),
        "peak_gib": (stats.peak_allocated - base) / GIB,
        "peak_reserved_gib": (stats.peak_reserved - base) / GIB,
        "driver_before_gib": before, "driver_step_peak_gib": driver.peak,
        "driver_after_gib": after,
        **({"memory_series": series.points()} if cuda else {})}


DEFAULT = ("wan21_1_3b", "umt5", "wan22_5b")


def _parts(name: str) -> tuple[str, ...]:
    """The parts of `name` that BENCH_PARTS (default: all) asks for."""
    wanted = [p for p in os.environ.get("BENCH_PARTS", ",".join(PARTS)).split(",") if p]
    unknown = sorted(set(wanted) - set(PARTS))
    if unknown:
        raise ValueError(f"BENCH_PARTS names {unknown}; use any of {', '.join(PARTS)}, "
                         "comma-separated (e.g. BENCH_PARTS=decode,encode)")
    own = ("encode",) if name == "umt5" else ("step", "decode")
    return tuple(p for p in own if p in wanted)


def run(quick: bool = False) -> dict[str, Any]:
    device = gpucore.default_device()
    cuda = _harness.torch_cuda()
    wanted = [m for m in os.environ.get("BENCH_MODELS", ",".join(DEFAULT)).split(",") if m]
    unknown = sorted(set(wanted) - set(DEFAULT))
    if unknown:
        raise ValueError(f"BENCH_MODELS names {unknown}; use any of {', '.join(DEFAULT)}, "
                         "comma-separated (e.g. BENCH_MODELS=wan21_1_3b,wan22_5b)")
    rows: list[dict[str, Any]] = []
    for name in wanted:
        for part in _parts(name):
            start = time.perf_counter()
            try:
                part_rows = _one_part(_Part(name, part, quick), device, cuda)
            except Exception as exc:  # an out-of-memory part loses its row only
                part_rows = [{"model": name, "part": part, "impl": "ours",
                              "error": f"{type(exc).__name__}: {str(exc)[:300]}"}]
            # freed out of the handler: its traceback holds the failed part's tensors
            if "error" in part_rows[-1]:
                gc.collect()
                device.empty_pool()
                if cuda:
                    cuda.cuda.empty_cache()
            print(json.dumps(part_rows, default=float),
                  f"({time.perf_counter() - start:.0f} s)", flush=True)  # a cut-off run keeps it
            rows += part_rows
    return {
        "benchmark": "wan",
        "environment": _harness.environment(device),
        "notes": "Wan 2.1 T2V 1.3B at 480x832, 81 frames (latents 16 x 21 x 60 x 104, 32760 "
                 "patches) and Wan 2.2 TI2V 5B at 704x1280, 121 frames (latents 48 x 31 x 44 x "
                 "80, 27280 patches): step = the transformer on batch 1 twice (prompt and "
                 "negative prompt, 512 text tokens each: guidance as WanPipeline runs it); "
                 "decode = the VAE on random latents of that shape (ours one latent frame at a "
                 "time, mode replay: the third chunk recorded and the rest replayed; eager: "
                 "every chunk through the ops); umt5 encode = UMT5-XXL on 512 tokens, 40 "
                 "unmasked. Random bf16 weights drawn by torch (transformer normal(0, 0.02), "
                 "norm scales 1 + normal(0, 0.02); UMT5 " + (
                     "normal(0, 0.02) too" if os.environ.get("BENCH_UMT5_WEIGHTS") == "normal"
                     else "as T5 initializes it (q std (d_model d_kv)^-1/2, ...)") + "; "
                 "the VAE's default init) shared by both rows; ours float16 (float32 without "
                 "shader-f16); rel_err = max|ours - reference| / max|reference| against "
                 "the reference in bf16 on CUDA (fp32 on the CPU); rel_err_fp32 (umt5, CUDA): "
                 "the same against the reference run again in float32, and the reference "
                 "row's rel_err is its bf16 output's against that; each side timed once after "
                 "a warm-up call on less work (one guidance pass; two latent frames), ours "
                 "with timestamp queries on; dispatches: those the ops encode (a replay's "
                 "not counted); vs_bf16 = reference wall_ms "
                 "/ ours (above 1: we are faster); peak_gib: reference "
                 "torch.cuda.max_memory_allocated, ours Device.memory_stats peak above the "
                 "level before loading, weights included",
        "columns": COLUMNS,
        "rows": rows,
    }

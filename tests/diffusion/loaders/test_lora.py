"""LoRA / LyCORIS loading and patching (diffusion.lora) against independent references.

- kohya and diffusers/PEFT files: diffusers' `load_lora_weights` + `fuse_lora` on the same tiny
  pipeline give the reference weights (torch CPU, float32). Tolerance: every patched weight
  within 4e-6 * max|W| of the reference (a few float32 ulps: we sum in float64 and round once,
  torch adds a float32 update to float32 weights), while the updates themselves are ~1e-1 of
  the weights, so a wrong scale, layer or transpose fails by orders of magnitude.
- LoCon with `lora_mid`, LoHa, `dyn_dim`, per-layer alphas, LDM layer names, several LoRAs at
  once: a direct numpy computation from the tensors this test wrote (diffusers cannot load LoHa
  or `lora_mid`; it mis-assigns per-layer alphas on attention layers, so its parity test uses
  one alpha per file), same tolerance.
- Removal and changes are exact: compared bit for bit.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

diffusers = pytest.importorskip("diffusers", reason="test-only reference (extra: reference)")
import safetensors.numpy  # noqa: E402
import torch  # noqa: E402
from sd_tiny import tiny_text_encoder, tiny_unet, tiny_vae, write_pipeline  # noqa: E402

import gpucore  # noqa: E402
from diffusion import load_pipeline  # noqa: E402
from diffusion.infotext import format_infotext  # noqa: E402
from diffusion.loaders.keymaps.ldm_keys import unet_name  # noqa: E402
from diffusion.lora import (  # noqa: E402
    LoraError,
    LoraFile,
    LoraManager,
    find_lora,
    format_lora_hashes,
    lora_hash,
    lora_hashes,
    lora_uses,
    short_hash,
)
from diffusion.lora._names import ldm_path  # noqa: E402
from diffusion.text.prompts import extract_extra_networks  # noqa: E402

RANK = 4
# diffusers' load_lora_weights needs peft; the tests against numpy do not
requires_peft = pytest.mark.skipif(
    importlib.util.find_spec("peft") is None,
    reason="diffusers' LoRA loading needs peft (pip install peft; the reference extra has it)")
TOLERANCE = 4e-6  # relative to max|W| of each weight


@pytest.fixture(scope="module")
def components() -> dict[str, Any]:
    return {"unet": tiny_unet(), "vae": tiny_vae(), "text_encoder": tiny_text_encoder()}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, components: dict[str, Any]) -> Path:
    return write_pipeline(tmp_path_factory.mktemp("tiny-sd-lora"), **components)


@pytest.fixture(scope="module")
def reference(model_dir: Path, components: dict[str, Any]) -> Any:
    """diffusers' pipeline on the same modules (built in-process: from_pretrained is slow)."""
    import transformers

    vocab = model_dir / "tokenizer"
    pipe = diffusers.StableDiffusionPipeline(
        **components, tokenizer=transformers.CLIPTokenizer(
            str(vocab / "vocab.json"), str(vocab / "merges.txt"), model_max_length=77),
        scheduler=diffusers.DDIMScheduler.from_pretrained(model_dir / "scheduler"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture()
def fused(reference: Any) -> Any:
    """`reference`, given back with its original weights after the test fused a LoRA in."""
    base = {c: {k: v.clone() for k, v in getattr(reference, c).state_dict().items()}
            for c in ("unet", "text_encoder")}
    yield reference
    reference.unload_lora_weights()
    for component, state in base.items():
        getattr(reference, component).load_state_dict(state)


@pytest.fixture(scope="module")
def layers(reference: Any) -> dict[str, dict[str, tuple[int, ...]]]:
    """component -> {module path (diffusers / transformers 5 names): weight shape} of every
    linear and conv layer."""
    found: dict[str, dict[str, tuple[int, ...]]] = {}
    for component in ("unet", "text_encoder"):
        model = getattr(reference, component)
        found[component] = {name: tuple(m.weight.shape) for name, m in model.named_modules()
                            if isinstance(m, torch.nn.Linear | torch.nn.Conv2d)}
    return found


@pytest.fixture(scope="module")
def ours(model_dir: Path, first_device: gpucore.Device) -> Any:
    return load_pipeline(model_dir, device=first_device)


def _pair(rng: np.random.Generator, shape: tuple[int, ...], locon: bool = True,
          dtype: Any = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Random (down, up) for a layer: LoCon's kxk down and 1x1 up for a conv."""
    out, inp, *kernel = shape
    down_shape = (RANK, inp, *kernel) if locon else (RANK, inp, *[1] * len(kernel))
    up_shape = (out, RANK, *[1] * len(kernel))
    return ((rng.standard_normal(down_shape) * 0.3).astype(dtype),
            (rng.standard_normal(up_shape) * 0.3).astype(dtype))


def _te_name(path: str) -> str:
    return path if path.startswith("text_model.") else "text_model." + path


def _kohya(layers: dict[str, dict[str, tuple[int, ...]]], seed: int,
           alpha: float | None = 2.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    tensors = {}
    for component, prefix in (("unet", "lora_unet_"), ("text_encoder", "lora_te_")):
        for path, shape in layers[component].items():
            name = _te_name(path) if component == "text_encoder" else path
            key = prefix + name.replace(".", "_")
            down, up = _pair(rng, shape)
            tensors[f"{key}.lora_down.weight"], tensors[f"{key}.lora_up.weight"] = down, up
            if alpha is not None:
                tensors[f"{key}.alpha"] = np.array(alpha, np.float32)
    return tensors


def _peft(layers: dict[str, dict[str, tuple[int, ...]]], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    tensors = {}
    for component in ("unet", "text_encoder"):
        for path, shape in layers[component].items():
            down, up = _pair(rng, shape)
            tensors[f"{component}.{path}.lora_A.weight"] = down
            tensors[f"{component}.{path}.lora_B.weight"] = up
    return tensors


def _save(path: Path, tensors: dict[str, np.ndarray],
          metadata: dict[str, str] | None = None) -> Path:
    safetensors.numpy.save_file(tensors, str(path), metadata=metadata)
    return path


def _weights(pipe: Any) -> dict[str, dict[str, np.ndarray]]:
    return {c: getattr(pipe, c).state_dict() for c in ("unet", "text_encoder")}


def _torch_weights(pipe: Any) -> dict[str, dict[str, np.ndarray]]:
    return {c: {k.removeprefix("text_model."): v.detach().numpy().copy()
                for k, v in getattr(pipe, c).state_dict().items()}
            for c in ("unet", "text_encoder")}


def _assert_close(ours: dict[str, dict[str, np.ndarray]],
                  expected: dict[str, dict[str, np.ndarray]]) -> None:
    for component, weights in expected.items():
        for key, want in weights.items():
            if key not in ours[component]:
                continue
            got = ours[component][key]
            err = np.abs(got.astype(np.float64) - want).max()
            assert err <= TOLERANCE * np.abs(want).max(), (component, key, err)


def _assert_changed(before: dict[str, dict[str, np.ndarray]],
                    after: dict[str, dict[str, np.ndarray]],
                    layers: dict[str, dict[str, tuple[int, ...]]]) -> None:
    """Every layer the LoRA names moved by far more than the tolerance (the comparison means
    something)."""
    for component, paths in layers.items():
        for path in paths:
            key = path.removeprefix("text_model.") + ".weight"
            old, new = before[component][key], after[component][key]
            assert np.abs(new - old).max() > 1e-3 * np.abs(old).max(), (component, key)


@requires_peft
@pytest.mark.parametrize("fmt", ["kohya", "diffusers"])
def test_matches_diffusers_fuse_lora(fmt: str, tmp_path: Path, fused: Any, ours: Any,
                                     layers: Any) -> None:
    tensors = _kohya(layers, 1) if fmt == "kohya" else _peft(layers, 2)
    path = _save(tmp_path / f"{fmt}.safetensors", tensors)
    reference = fused
    base = _torch_weights(reference)
    reference.load_lora_weights(str(path))
    reference.fuse_lora(components=["unet"], lora_scale=0.7)
    reference.fuse_lora(components=["text_encoder"], lora_scale=-0.4)
    reference.unload_lora_weights()
    expected = _torch_weights(reference)
    _assert_changed(base, expected, layers)

    loras = LoraManager(ours)
    loras.set([(path, -0.4, 0.7)])
    try:
        _assert_close(_weights(ours), expected)
    finally:
        loras.clear()


@requires_peft
def test_peft_adapter_saved_by_diffusers(tmp_path: Path, fused: Any, ours: Any) -> None:
    """A LoRA made with peft (`LoraConfig` with lora_alpha != r, alpha_pattern, rank_pattern)
    and saved by diffusers' `save_lora_weights`, whose alphas live in the file's metadata."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(0)
    to_q = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    fused.unet.add_adapter(LoraConfig(
        r=4, lora_alpha=8, init_lora_weights=False, rank_pattern={to_q: 2},
        alpha_pattern={"conv1": 3}, target_modules=["to_q", "to_v", "ff.net.2", "conv1"]))
    fused.text_encoder.add_adapter(LoraConfig(
        r=4, lora_alpha=2, init_lora_weights=False, target_modules=["q_proj", "fc1"]))
    diffusers.StableDiffusionPipeline.save_lora_weights(
        tmp_path, unet_lora_layers=get_peft_model_state_dict(fused.unet),
        text_encoder_lora_layers=get_peft_model_state_dict(fused.text_encoder),
        unet_lora_adapter_metadata=fused.unet.peft_config["default"].to_dict(),
        text_encoder_lora_adapter_metadata=fused.text_encoder.peft_config["default"].to_dict())
    fused.unload_lora_weights()
    path = tmp_path / "pytorch_lora_weights.safetensors"
    base = _torch_weights(fused)
    fused.load_lora_weights(str(path))
    fused.fuse_lora(components=["unet"], lora_scale=0.9)
    fused.fuse_lora(components=["text_encoder"], lora_scale=1.5)
    fused.unload_lora_weights()
    expected = _torch_weights(fused)
    changed = [(c, k) for c, w in expected.items() for k in w
               if not np.array_equal(w[k], base[c][k])]
    assert len(changed) == len(LoraFile.load(path).modules) > 20

    loras = LoraManager(ours)
    loras.set([(path, 1.5, 0.9)])
    try:
        assert sorted(loras.patched()) == sorted(f"{c}:{k}" for c, k in changed)
        _assert_close(_weights(ours), expected)
    finally:
        loras.clear()


@requires_peft
def test_dora_saved_by_diffusers_matches_peft(tmp_path: Path, fused: Any, ours: Any) -> None:
    """PEFT's DoRA (use_dora: a magnitude per output row) on linear and conv layers, saved by
    diffusers and fused by PEFT's own merge: the same weights at multiplier 1 (PEFT's scale
    acts inside the norm, the WebUI's multiplier blends the result: they part elsewhere)."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(1)
    fused.unet.add_adapter(LoraConfig(r=4, lora_alpha=6, init_lora_weights=False, use_dora=True,
                                      target_modules=["to_q", "ff.net.2", "conv1"]))
    with torch.no_grad():  # trained magnitudes, not the norms PEFT starts them from
        for name, parameter in fused.unet.named_parameters():
            if "lora_magnitude_vector" in name:
                parameter.mul_(1 + 0.3 * torch.rand_like(parameter))
    diffusers.StableDiffusionPipeline.save_lora_weights(
        tmp_path, unet_lora_layers=get_peft_model_state_dict(fused.unet),
        unet_lora_adapter_metadata=fused.unet.peft_config["default"].to_dict())
    fused.unload_lora_weights()
    path = tmp_path / "pytorch_lora_weights.safetensors"
    assert any("magnitude" in key for key in safetensors.numpy.load_file(str(path)))
    base = _torch_weights(fused)
    fused.load_lora_weights(str(path))
    fused.fuse_lora(components=["unet"], lora_scale=1.0)
    fused.unload_lora_weights()
    expected = _torch_weights(fused)
    changed = [k for k in expected["unet"] if not np.array_equal(expected["unet"][k],
                                                                 base["unet"][k])]
    assert len(changed) == len(LoraFile.load(path).modules) > 10
    loras = LoraManager(ours)
    loras.set([(path, 1.0, 1.0)])
    try:
        assert sorted(loras.patched()) == sorted(f"unet:{k}" for k in changed)
        _assert_close(_weights(ours), expected)
    finally:
        loras.clear()


def _decomposed(weight: np.ndarray, update: np.ndarray, scale: np.ndarray,
                multiplier: float) -> np.ndarray:
    """The WebUI's / Forge's DoRA merge on torch (network.py `apply_weight_decompose`, Forge's
    `weight_decompose`), the norm of W + dW on either axis (see diffusion.lora._delta)."""
    w, v = torch.from_numpy(weight).double(), torch.from_numpy(weight + update).double()
    m = torch.from_numpy(scale).double()
    if m.shape[0] == w.shape[0]:
        norm = v.reshape(v.shape[0], -1).norm(dim=1, keepdim=True).reshape(
            v.shape[0], *[1] * (v.dim() - 1))
    else:
        norm = v.transpose(0, 1).reshape(v.shape[1], -1).norm(dim=1, keepdim=True).reshape(
            v.shape[1], *[1] * (v.dim() - 1)).transpose(0, 1)
    merged = v * (m / (norm + torch.finfo(torch.float32).eps))
    return (w + multiplier * (merged - w)).numpy()


def test_kohya_dora_rows_and_columns_stacked_with_a_lora(tmp_path: Path, ours: Any) -> None:
    """kohya / LyCORIS `dora_scale` on the columns (1, in) of a linear layer and a conv, on the
    rows (out, 1) of another, at multipliers != 1, a plain LoRA on one of the same layers
    after it (applied on the weight the DoRA left, as Forge merges in order)."""
    rng = np.random.default_rng(5)
    layers = {"mid_block.attentions.0.transformer_blocks.0.attn1.to_q": "columns",
              "down_blocks.0.resnets.0.conv1": "columns",
              "mid_block.attentions.0.transformer_blocks.0.attn1.to_k": "rows"}
    base = _weights(ours)["unet"]
    dora, plain, updates = {}, {}, {}
    for path, axis in layers.items():
        weight = base[path + ".weight"].astype(np.float64)
        key = "lora_unet_" + path.replace(".", "_")
        down, up = _pair(rng, weight.shape)
        dora[f"{key}.lora_down.weight"], dora[f"{key}.lora_up.weight"] = down, up
        dora[f"{key}.alpha"] = np.array(2.0, np.float32)
        updates[path] = (up.reshape(up.shape[0], -1).astype(np.float64)
                         @ down.reshape(RANK, -1)).reshape(weight.shape) * 2.0 / RANK
        flat = weight.reshape(weight.shape[0], -1) if axis == "rows" else np.swapaxes(
            weight, 0, 1).reshape(weight.shape[1], -1)
        magnitude = np.linalg.norm(flat, axis=1) * rng.uniform(0.7, 1.3, flat.shape[0])
        shape = (-1, 1) if axis == "rows" else (1, -1, *[1] * (weight.ndim - 2))
        dora[f"{key}.dora_scale"] = magnitude.reshape(shape).astype(np.float32)
    to_q = "mid_block.attentions.0.transformer_blocks.0.attn1.to_q"
    key = "lora_unet_" + to_q.replace(".", "_")
    down, up = _pair(rng, base[to_q + ".weight"].shape)
    plain[f"{key}.lora_down.weight"], plain[f"{key}.lora_up.weight"] = down, up
    second = (up.astype(np.float64) @ down) * 1.0  # no alpha: scale 1
    files = [_save(tmp_path / "dora.safetensors", dora), _save(tmp_path / "plain.safetensors",
                                                                 plain)]
    loras = LoraManager(ours)
    loras.set([(files[0], 1.0, 0.7), (files[1], 1.0, 0.5)])
    try:
        got = _weights(ours)["unet"]
        for path in layers:
            weight = base[path + ".weight"].astype(np.float64)
            scale = dora["lora_unet_" + path.replace(".", "_") + ".dora_scale"]
            want = _decomposed(weight, updates[path], scale, 0.7)
            if path == to_q:
                want = want + 0.5 * second
            moved = np.abs(want - weight).max()
            err = np.abs(got[path + ".weight"] - want).max()
            assert moved > 1e-2 * np.abs(weight).max() and err <= TOLERANCE * np.abs(
                want).max(), (path, err, moved)
        with pytest.raises(LoraError, match="DoRA magnitudes of shape"):
            bad = {**dora, f"lora_unet_{to_q.replace('.', '_')}.dora_scale":
                   np.ones((1, 7), np.float32)}
            loras.set([(_save(tmp_path / "bad.safetensors", bad), 1.0, 1.0)])
    finally:
        loras.clear()


# -- LyCORIS, several LoRAs, changes: against numpy ------------------------------------------


def _lyco(layers: dict[str, dict[str, tuple[int, ...]]], seed: int, dtype: Any,
          ) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """A LyCORIS-style kohya file with LDM UNet names: LoCon (3x3 down) on convs, `lora_mid`
    on every third 3x3 conv, LoKr with a CP-form w2 on others, LoHa, LoKr (both factors
    whole: no alpha applies) and a full difference on every fourth linear layer each, a
    random alpha per layer.
    Returns the tensors and, per layer, what numpy needs to rebuild its update."""
    rng = np.random.default_rng(seed)
    tensors, specs = {}, []
    for component, prefix in (("unet", "lora_unet_"), ("text_encoder", "lora_te_")):
        for i, (path, shape) in enumerate(layers[component].items()):
            if component == "unet":
                name = ldm_path(path, 2, [True, False])
                assert name is not None, path
            else:
                name = _te_name(path)
            key = prefix + name.replace(".", "_")
            alpha = float(rng.uniform(0.5, 8))
            tensors[f"{key}.alpha"] = np.array(alpha, np.float32)
            spec = {"component": component, "path": path, "shape": shape,
                    "scale": alpha / RANK}
            if len(shape) == 2 and i % 4 == 1:
                parts = {p: (rng.standard_normal(s) * 0.3).astype(dtype)
                         for p, s in (("w1a", (shape[0], RANK)), ("w1b", (RANK, shape[1])),
                                      ("w2a", (shape[0], RANK)), ("w2b", (RANK, shape[1])))}
                tensors.update({f"{key}.hada_{p[:2]}_{p[2]}": v for p, v in parts.items()})
                spec["loha"] = parts
            elif len(shape) == 2 and i % 4 == 2:
                diff = (rng.standard_normal(shape) * 0.05).astype(dtype)
                tensors[f"{key}.diff"] = diff
                spec.update(full=diff, scale=1.0)
            elif len(shape) == 2 and i % 4 == 3:
                halves = [2 - n % 2 for n in shape]  # w1 (2 or 1, 2 or 1): 37 is prime
                w1 = (rng.standard_normal(halves) * 0.5).astype(dtype)
                w2 = (rng.standard_normal([n // h for n, h in zip(shape, halves)])
                      * 0.1).astype(dtype)
                tensors[f"{key}.lokr_w1"], tensors[f"{key}.lokr_w2"] = w1, w2
                spec.update(lokr=(w1, w2), scale=1.0)
            elif len(shape) == 4 and shape[2] == 3 and i % 3 == 1:
                halves = [2 - n % 2 for n in shape[:2]]
                w1 = (rng.standard_normal(halves) * 0.5).astype(dtype)
                w2a, w2b = ((rng.standard_normal((RANK, n // h)) * 0.3).astype(dtype)
                            for n, h in zip(shape[:2], halves))
                t2 = (rng.standard_normal((RANK, RANK, 3, 3)) * 0.3).astype(dtype)
                tensors.update({f"{key}.lokr_w1": w1, f"{key}.lokr_w2_a": w2a,
                                f"{key}.lokr_w2_b": w2b, f"{key}.lokr_t2": t2})
                spec["lokr_cp"] = (w1, w2a, w2b, t2)
            elif len(shape) == 4 and shape[2] == 3 and i % 3 == 0:
                down, up = _pair(rng, shape, locon=False, dtype=dtype)
                mid = (rng.standard_normal((RANK, RANK, 3, 3)) * 0.3).astype(dtype)
                tensors[f"{key}.lora_down.weight"], tensors[f"{key}.lora_up.weight"] = down, up
                tensors[f"{key}.lora_mid.weight"] = mid
                spec["cp"] = (down, up, mid)
            else:
                down, up = _pair(rng, shape, dtype=dtype)
                tensors[f"{key}.lora_down.weight"], tensors[f"{key}.lora_up.weight"] = down, up
                spec["lora"] = (down, up)
            specs.append(spec)
    return tensors, specs


def _update(spec: dict[str, Any], dyn_dim: int | None) -> np.ndarray:
    """One layer's unscaled update, written out directly (loops over the kernel taps)."""
    shape = spec["shape"]
    if "loha" in spec:
        p = {k: v.astype(np.float64) for k, v in spec["loha"].items()}
        return (p["w1a"] @ p["w1b"]) * (p["w2a"] @ p["w2b"])
    if "full" in spec:
        return spec["full"].astype(np.float64)
    if "lokr" in spec:  # out[a * o2 + b, c * i2 + d] = w1[a, c] * w2[b, d]
        w1, w2 = (t.astype(np.float64) for t in spec["lokr"])
        return np.einsum("ac,bd->abcd", w1, w2).reshape(shape)
    if "lokr_cp" in spec:
        w1, w2a, w2b, t2 = (t.astype(np.float64) for t in spec["lokr_cp"])
        w2 = np.stack([np.stack([w2a.T @ t2[:, :, y, x] @ w2b for x in range(shape[3])], -1)
                       for y in range(shape[2])], -2)
        return np.einsum("ac,bdyx->abcdyx", w1, w2).reshape(shape)
    if "cp" in spec:
        down, up, mid = (t.astype(np.float64) for t in spec["cp"])
        out = np.zeros(shape)
        for ky in range(shape[2]):
            for kx in range(shape[3]):
                out[:, :, ky, kx] = up[:, :, 0, 0] @ mid[:, :, ky, kx] @ down[:, :, 0, 0]
        return out
    down, up = (t.astype(np.float64) for t in spec["lora"])
    rank = dyn_dim or RANK
    if len(shape) == 2:
        return up[:, :rank] @ down[:rank]
    out = np.zeros(shape)
    for ky in range(shape[2]):
        for kx in range(shape[3]):
            out[:, :, ky, kx] = up[:, :rank, 0, 0] @ down[:rank, :, ky, kx]
    return out


def _expected(base: dict[str, dict[str, np.ndarray]],
              uses: list[tuple[list[dict[str, Any]], float, float, int | None]],
              ) -> dict[str, dict[str, np.ndarray]]:
    """The base weights plus each LoRA's updates (float64)."""
    result = {c: {k: v.astype(np.float64) for k, v in w.items()} for c, w in base.items()}
    for specs, te, unet, dyn_dim in uses:
        for spec in specs:
            weight = unet if spec["component"] == "unet" else te
            dyn = dyn_dim if "lora" in spec else None
            key = spec["path"] + ".weight"
            result[spec["component"]][key] += weight * spec["scale"] * _update(spec, dyn)
    return result


@pytest.fixture(scope="module")
def lyco_files(tmp_path_factory: pytest.TempPathFactory,
               layers: Any) -> list[tuple[Path, list[dict[str, Any]]]]:
    folder = tmp_path_factory.mktemp("lyco")
    files = []
    for seed, dtype in ((3, np.float32), (4, np.float16)):  # LoRAs ship in both
        tensors, specs = _lyco(layers, seed, dtype)
        files.append((_save(folder / f"lyco{seed}.safetensors", tensors), specs))
    return files


def test_lycoris_and_dyn_dim_match_numpy(ours: Any, lyco_files: Any) -> None:
    (path, specs), _ = lyco_files
    file = LoraFile.load(path)
    kinds = {module.kind for module in file.modules.values()}
    assert kinds == {"lora", "loha", "lokr", "full"}
    assert any("mid" in m.tensors for m in file.modules.values())
    assert any("kt2" in m.tensors for m in file.modules.values())
    base = _weights(ours)
    loras = LoraManager(ours)
    try:
        for dyn_dim in (None, 2):
            loras.set([(file, 0.6, 1.3, dyn_dim)])
            _assert_close(_weights(ours), _expected(base, [(specs, 0.6, 1.3, dyn_dim)]))
    finally:
        loras.clear()


def test_several_loras_change_and_remove_exactly(ours: Any, lyco_files: Any) -> None:
    (path_a, specs_a), (path_b, specs_b) = lyco_files
    base = _weights(ours)
    loras = LoraManager(ours)
    try:
        loras.set([(path_a, 1.0, 1.0)])
        loras.set([(path_a, 0.5, 0.25), (path_b, 1.0, -1.0)])
        assert [use.file.name for use in loras.active] == ["lyco3", "lyco4"]
        _assert_close(_weights(ours), _expected(
            base, [(specs_a, 0.5, 0.25, None), (specs_b, 1.0, -1.0, None)]))
        loras.set([(path_a, 0.5, 0.25)])
        changed = _weights(ours)
        loras.clear()
        assert loras.active == () and loras.patched() == []
        _assert_exact(_weights(ours), base)
        loras.set([(path_a, 0.5, 0.25)])
        _assert_exact(_weights(ours), changed)  # a changed set() equals a fresh one
    finally:
        loras.clear()
    _assert_exact(_weights(ours), base)


def test_a_patched_weight_keeps_its_host_copy(ours: Any, lyco_files: Any) -> None:
    """A weight with a host copy (a memory mode's unit: gpustd.nn.offload.keep_host_copy)
    keeps the values a LoRA writes, and those it restores, as its host copy: evicted later,
    inside a capture too, it reads nothing back. One without gets none (no host memory)."""
    from gpustd.nn.offload import keep_host_copy, needs_read_back

    (path, _), _ = lyco_files
    keep_host_copy(ours.unet)
    loras = LoraManager(ours)
    try:
        for uses in ([(path, 1.0, 1.0)], []):
            loras.set(uses)
            assert any(key.startswith("unet:") for key in loras.patched()) == bool(uses)
            assert not needs_read_back(ours.unet)
            for key, tensor in ours.unet.named_parameters():
                np.testing.assert_array_equal(tensor.buffer.host_copy, tensor.buffer.read(),
                                              err_msg=key)
            assert all(t.buffer.host_copy is None for t in ours.text_encoder.parameters())
    finally:
        loras.clear()


def _assert_exact(got: dict[str, dict[str, np.ndarray]],
                  want: dict[str, dict[str, np.ndarray]]) -> None:
    for component, weights in want.items():
        for key, value in weights.items():
            np.testing.assert_array_equal(got[component][key], value, err_msg=key)


def test_ldm_names_invert_the_checkpoint_loader(ours: Any) -> None:
    """Our diffusers -> LDM names, read back by the single-file loader's LDM -> diffusers."""
    up_attention = [kind.startswith("CrossAttn") for kind in ours.unet.config["up_block_types"]]
    paths = {key.rpartition(".")[0] for key, _ in ours.unet.named_parameters()}
    for path in paths:
        ldm = ldm_path(path, 2, up_attention)
        assert ldm is not None, path
        assert unet_name(ldm + ".weight", 2) == path + ".weight", (path, ldm)


@pytest.mark.nodevice
@pytest.mark.parametrize(("path", "ldm"), [
    ("up_blocks.0.upsamplers.0.conv", "output_blocks.2.1.conv"),
    ("up_blocks.1.upsamplers.0.conv", "output_blocks.5.2.conv"),
    ("down_blocks.0.downsamplers.0.conv", "input_blocks.3.0.op"),
    ("down_blocks.1.attentions.1.proj_in", "input_blocks.5.1.proj_in"),
    ("up_blocks.3.resnets.2.conv_shortcut", "output_blocks.11.0.skip_connection"),
    ("up_blocks.2.attentions.0.transformer_blocks.0.ff.net.2",
     "output_blocks.6.1.transformer_blocks.0.ff.net.2"),
    ("mid_block.resnets.1.time_emb_proj", "middle_block.2.emb_layers.1"),
    ("time_embedding.linear_2", "time_embed.2"),
])
def test_ldm_names_of_sd1(path: str, ldm: str) -> None:
    """Known answers: SD 1.5's own checkpoint keys (up block 0 has no attention)."""
    assert ldm_path(path, 2, [False, True, True, True]) == ldm


def test_older_diffusers_names_patch_the_same_layers(tmp_path: Path, ours: Any) -> None:
    """`lora.down`/`lora.up`, attention processors' `to_out_lora` and the text encoder's
    `lora_linear_layer` name the same layers as PEFT's lora_A/lora_B."""
    rng = np.random.default_rng(6)
    block = "mid_block.attentions.0.transformer_blocks.0"
    layers = {("unet", f"{block}.attn1.to_out.0", f"{block}.attn1.processor.to_out_lora"),
              ("unet", f"{block}.ff.net.2", f"{block}.ff.net.2.lora"),
              ("text_encoder", "text_model.encoder.layers.1.mlp.fc1",
               "text_model.encoder.layers.1.mlp.fc1.lora_linear_layer")}
    shapes = {key: t.shape for c in ("unet", "text_encoder")
              for key, t in getattr(ours, c).named_parameters()}
    new, old = {}, {}
    for component, path, old_name in layers:
        down, up = _pair(rng, shapes[path.removeprefix("text_model.") + ".weight"])
        new[f"{component}.{path}.lora_A.weight"], new[f"{component}.{path}.lora_B.weight"] = (
            down, up)
        old[f"{component}.{old_name}.down.weight"], old[f"{component}.{old_name}.up.weight"] = (
            down, up)
    loras = LoraManager(ours)
    try:
        loras.set([(_save(tmp_path / "new.safetensors", new), 0.7, 0.7)])
        patched, expected = loras.patched(), _weights(ours)
        assert len(patched) == 3
        loras.set([(_save(tmp_path / "old.safetensors", old), 0.7, 0.7)])
        assert loras.patched() == patched
        _assert_exact(_weights(ours), expected)
    finally:
        loras.clear()


def test_float16_pipeline_patches_and_restores(model_dir: Path, first_device: gpucore.Device,
                                               lyco_files: Any) -> None:
    if not first_device.has_f16:
        pytest.skip(f"{first_device.backend} adapter has no shader-f16")
    pipe = load_pipeline(model_dir, device=first_device, dtype=np.float16)
    (path, specs), _ = lyco_files
    base = _weights(pipe)
    loras = LoraManager(pipe)
    loras.set([(path, 0.5, 0.5)])
    patched = _weights(pipe)
    expected = _expected(base, [(specs, 0.5, 0.5, None)])
    for component, weights in expected.items():  # float32 math rounded to float16: 1 ulp
        for key, want in weights.items():
            got = patched[component][key]
            assert got.dtype == np.float16
            ulp = np.spacing(np.abs(want).astype(np.float16))
            assert np.all(np.abs(got - want) <= ulp), key
    loras.clear()
    _assert_exact(_weights(pipe), base)


# -- bad input: clear errors, nothing changed -------------------------------------------------

_LAYER = "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q"  # (64, 64)
_GOOD = {f"{_LAYER}.lora_down.weight": np.ones((RANK, 64), np.float32),
         f"{_LAYER}.lora_up.weight": np.ones((64, RANK), np.float32)}


@pytest.mark.nodevice
@pytest.mark.parametrize(("tensors", "message"), [
    ({"model.diffusion_model.out.2.weight": np.ones(2, np.float32)}, "unknown prefix"),
    ({f"{_LAYER}.lokr_w1": np.ones((2, 2), np.float32)}, "lacks its lokr_w2"),
    ({f"{_LAYER}.dora_scale": np.ones((64, 1), np.float32)}, "lacks its lora_down and lora_up"),
    ({f"{_LAYER}.lora_down.weight": np.ones((RANK, 64), np.float32)}, "lacks its up"),
    ({**_GOOD, f"{_LAYER}.lora_up.weight": np.ones((64, RANK + 1), np.float32)}, "rank"),
    ({**_GOOD, f"{_LAYER}.alpha": np.array(np.nan, np.float32)}, "NaN"),
    ({"unet.conv_in.lora_X.weight": np.ones((2, 2), np.float32)}, "not a LoRA up/down"),
    ({}, "no tensors"),
])
def test_malformed_files_are_refused(tmp_path: Path, tensors: dict[str, np.ndarray],
                                     message: str) -> None:
    path = _save(tmp_path / "bad.safetensors", tensors)
    with pytest.raises(LoraError, match=message) as error:
        LoraFile.load(path)
    assert str(path) in str(error.value)


@pytest.mark.nodevice
@pytest.mark.parametrize(("config", "message"), [
    ("{not json", "not valid JSON"), ("[1]", "JSON object"),
])
def test_bad_adapter_metadata_is_refused(tmp_path: Path, config: str, message: str) -> None:
    tensors = {"unet.conv_in.lora_A.weight": np.ones((RANK, 4, 3, 3), np.float32),
               "unet.conv_in.lora_B.weight": np.ones((32, RANK, 1, 1), np.float32)}
    path = _save(tmp_path / "peft.safetensors", tensors, {"lora_adapter_metadata": config})
    with pytest.raises(LoraError, match=message):
        LoraFile.load(path)


@pytest.mark.nodevice
def test_not_safetensors_is_refused(tmp_path: Path) -> None:
    for name, message in (("x.pt", "not a valid PyTorch file"),
                          ("x.ckpt", "not a valid PyTorch file"), ("x.txt", ".safetensors"),
                          ("x.safetensors", "not a valid safetensors")):
        (tmp_path / name).write_bytes(b"\x80\x04 not a safetensors file at all")
        with pytest.raises(LoraError, match=message):
            LoraFile.load(tmp_path / name)


@pytest.mark.parametrize(("tensors", "message"), [
    ({f"{_LAYER}.lora_down.weight": np.ones((RANK, 63), np.float32),
      f"{_LAYER}.lora_up.weight": np.ones((64, RANK), np.float32)}, r"shape \(64, 63\)"),
    ({k.replace("mid_block", "down_blocks_9"): v for k, v in _GOOD.items()}, "not in this"),
    ({k.replace("lora_unet_", "lora_te2_"): v for k, v in _GOOD.items()}, "SDXL"),
])
def test_loras_for_other_models_change_nothing(tmp_path: Path, ours: Any, lyco_files: Any,
                                               tensors: dict[str, np.ndarray],
                                               message: str) -> None:
    bad = _save(tmp_path / "other.safetensors", tensors)
    loras = LoraManager(ours)
    before = ours.unet.state_dict()
    with pytest.raises(LoraError, match=message) as error:
        loras.set([(lyco_files[0][0], 1.0, 1.0), (bad, 1.0, 1.0)])
    assert str(bad) in str(error.value)
    assert loras.active == () and loras.patched() == []
    _assert_exact({"unet": ours.unet.state_dict()}, {"unet": before})


@pytest.mark.parametrize("weight", [float("nan"), float("inf"), 1e6, True, "0.5"])
def test_weights_out_of_range_are_refused(tmp_path: Path, ours: Any, weight: Any) -> None:
    path = _save(tmp_path / "good.safetensors", _GOOD)
    with pytest.raises(LoraError, match="weight"):
        LoraManager(ours).set([(path, 1.0, weight)])
    with pytest.raises(LoraError, match="dyn_dim"):
        LoraManager(ours).set([(path, 1.0, 1.0, 0)])


@pytest.mark.nodevice
def test_find_lora_by_name(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("top.safetensors", "sub/deep.safetensors", "sub/old.pt", "a/twin.safetensors",
                 "b/twin.safetensors"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert find_lora("top", tmp_path) == tmp_path / "top.safetensors"
    assert find_lora("deep", tmp_path) == tmp_path / "sub" / "deep.safetensors"
    assert find_lora("old", tmp_path) == tmp_path / "sub" / "old.pt"  # read safely when loaded
    for name, message in (("missing", "no LoRA named 'missing'.*deep, top, twin"),
                          ("twin", "ambiguous"),
                          ("../top", "not a file name"), ("sub/deep", "not a file name"),
                          ("..", "not a file name"), ("a\\b", "not a file name"),
                          ("", "not a file name")):
        with pytest.raises(LoraError, match=message):
            find_lora(name, tmp_path)
    with pytest.raises(LoraError, match="does not exist"):
        find_lora("top", tmp_path / "nowhere")


@pytest.mark.nodevice
def test_hashes_are_the_webuis(tmp_path: Path) -> None:
    """The addnet hash: sha256 of everything after the header (kohya's train_util)."""
    path = _save(tmp_path / "h.safetensors", _GOOD, metadata={"ss_output_name": "h"})
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    assert json.loads(raw[8:8 + length])["__metadata__"] == {"ss_output_name": "h"}
    digest = hashlib.sha256(raw[8 + length:]).hexdigest()
    assert lora_hash(path) == digest and short_hash(path) == digest[:12]
    recorded = {"sshs_model_hash": "ab" * 32}
    assert short_hash(path, recorded) == "abababababab"
    assert format_lora_hashes([("fluffy", "0123456789ab"), ("a:b,c", "ba9876543210")]) == (
        "fluffy: 0123456789ab, abc: ba9876543210")


# -- end to end: a picture with a LoRA, ours against diffusers' --------------------------------


@requires_peft
def test_txt2img_with_lora_matches_diffusers(tmp_path: Path, fused: Any, ours: Any, layers: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Same prompt, DDIM steps and initial noise (diffusers' `randn_tensor` replaced by the
    draws our numpy generator makes for the seed, as in test_sd_pipeline); small and unguided
    to stay cheap on a CPU adapter. Images as uint8: mean difference < 0.5 levels, none over 4
    (float32 in another order), while the LoRA itself moves the picture by far more."""
    tensors = {k: v * 0.5 for k, v in _kohya(layers, 5).items() if not k.endswith(".alpha")}
    path = _save(tmp_path / "style.safetensors", tensors)
    prompt, size, steps = "a red fox in snow", 16, 3

    def reference() -> np.ndarray:
        rng = np.random.default_rng(7)
        monkeypatch.setattr(
            "diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion.randn_tensor",
            lambda shape, **_: torch.from_numpy(rng.standard_normal(tuple(shape))).float())
        images = fused(prompt, num_inference_steps=steps, guidance_scale=1.0, height=size,
                       width=size, output_type="np").images
        return np.round(images * 255).astype(np.int16)

    plain = reference()
    fused.load_lora_weights(str(path))
    fused.fuse_lora(components=["unet"], lora_scale=0.6)
    fused.fuse_lora(components=["text_encoder"], lora_scale=0.8)
    theirs = reference()
    # the WebUI's way in: a prompt tag, found by name in the LoRA folder (te 0.8, unet 0.6)
    ours.lora_dir = tmp_path
    try:
        result = ours.txt2img(f"{prompt} <lora:style:0.8:0.6>", steps=steps, cfg_scale=1.0,
                              seed=7, width=size, height=size, sampler="DDIM")
        assert f'Lora hashes: "style: {short_hash(path)}"' in format_infotext(result.settings)
        before = _weights(ours)
        ours.txt2img(prompt, steps=1, cfg_scale=1.0, seed=7, width=size, height=size,
                     sampler="DDIM")  # no tag: the LoRA comes out again
        assert any(not np.array_equal(before[c][k], v)
                   for c, layer in _weights(ours).items() for k, v in layer.items())
    finally:
        ours.lora_dir = None
        ours.txt2img(prompt, steps=1, cfg_scale=1.0, width=size, height=size, sampler="DDIM")
    got = np.stack(result.images).astype(np.int16)
    diff = np.abs(got - theirs)
    assert diff.mean() < 0.5 and diff.max() <= 4, (diff.mean(), diff.max())
    assert got.std() > 5, "degenerate (flat) image: the comparison would prove nothing"
    assert np.abs(theirs - plain).mean() > 5, "the LoRA barely changes the picture"


@pytest.mark.nodevice
def test_prompt_tags_to_loras_and_infotext(tmp_path: Path) -> None:
    _save(tmp_path / "fluffy.safetensors", _GOOD)
    (tmp_path / "styles").mkdir()
    _save(tmp_path / "styles" / "ink_v2.safetensors", _GOOD,
          metadata={"sshs_model_hash": "f" * 64, "ss_output_name": "ink"})
    text, tags = extract_extra_networks(
        "a fox <lora:fluffy:0.5>, <hypernet:x:1> snow <lora:ink:0.3:0.7:2> <lyco:fluffy>")
    assert text == "a fox ,  snow  "
    uses = lora_uses(tags, tmp_path)
    assert [(u.file.name, u.te_weight, u.unet_weight, u.dyn_dim) for u in uses] == [
        ("fluffy", 0.5, 0.5, None), ("ink_v2", 0.3, 0.7, 2), ("fluffy", 1.0, 1.0, None)]
    fluffy = short_hash(tmp_path / "fluffy.safetensors")
    assert lora_hashes(uses) == f"fluffy: {fluffy}, ink: ffffffffffff, fluffy: {fluffy}"
    with pytest.raises(LoraError, match=r"<lora:nope>.*no LoRA named 'nope'"):
        lora_uses(extract_extra_networks("<lora:nope:1>")[1], tmp_path)

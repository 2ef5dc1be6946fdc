"""LyCORIS's updates built from the weight itself (IA3, OFT, BOFT, GLoRA), and its norm-layer
differences, patched through LoraManager, against the WebUI's formulas
(extensions-builtin/Lora/network_*.py) written out here in float64 numpy: OFT's and BOFT's
rotations as whole (out x out) matrices, built by np.linalg.solve and explicit permutation
matrices rather than the loader's blockwise einsums.

Each file updates every layer of the tiny pipeline its type applies to (linear, conv, norm),
patched at (text encoder, UNet) multipliers (1, 0.6) and (0.6, 1), and compares
every weight with the formula applied to the original weights: within 4e-6 * max|W'| (float32
rounding of ours, once), while every update moves its weight by over 1e-3 * max|W'| (asserted).
Removal gives the original weights bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="test-only reference (extra: reference)")
import safetensors.numpy
import torch
from sd_tiny import tiny_text_encoder, tiny_unet, tiny_vae, write_pipeline

import gpucore
from diffusion import load_pipeline
from diffusion.lora import LoraError, LoraFile, LoraManager

TOLERANCE = 4e-6  # relative to max|W| of each weight
MULTIPLIERS = ((1.0, 0.6), (0.6, 1.0))  # (text encoder, UNet)


class Layer:
    """One parameter (`part`) of a layer of the tiny pipeline: its component, the layer's kohya
    name, our parameter key, the parameter's shape."""

    def __init__(self, component: str, path: str, shape: tuple[int, ...],
                 part: str = "weight") -> None:
        prefix = "lora_unet_" if component == "unet" else "lora_te_"
        self.component, self.name = component, prefix + path.replace(".", "_")
        self.key, self.shape = f"{path.removeprefix('text_model.')}.{part}", shape


@pytest.fixture(scope="module")
def components() -> dict[str, Any]:
    return {"unet": tiny_unet(), "vae": tiny_vae(), "text_encoder": tiny_text_encoder()}


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory, components: dict[str, Any],
         first_device: gpucore.Device) -> Any:
    folder = write_pipeline(tmp_path_factory.mktemp("tiny-sd-lycoris"), **components)
    return load_pipeline(folder, device=first_device)


def _layers(components: dict[str, Any], *types: type) -> list[Layer]:
    return [Layer(component, path, tuple(module.weight.shape))
            for component in ("unet", "text_encoder")
            for path, module in components[component].named_modules()
            if isinstance(module, types)]


def _weights(pipe: Any) -> dict[str, dict[str, np.ndarray]]:
    return {c: getattr(pipe, c).state_dict() for c in ("unet", "text_encoder")}


def _save(path: Path, tensors: dict[str, np.ndarray]) -> Path:
    safetensors.numpy.save_file(tensors, str(path))
    return path


# (original weight in float64, multiplier) -> the patched weight
Expected = Callable[[np.ndarray, float], np.ndarray]


def _check(ours: Any, paths: list[Path], expected: dict[Layer, Expected]) -> float:
    """Patch the LoRAs at `paths` (in that order) at MULTIPLIERS and compare every layer of
    `expected`; then remove them. Returns the largest error seen, relative to max|W'|."""
    base = _weights(ours)
    loras = LoraManager(ours)
    worst = 0.0
    try:
        for te, unet in MULTIPLIERS:
            loras.set([(path, te, unet) for path in paths])
            got = _weights(ours)
            for layer, formula in expected.items():
                old = base[layer.component][layer.key].astype(np.float64)
                want = formula(old, unet if layer.component == "unet" else te)
                scale = np.abs(want).max()
                assert np.abs(want - old).max() > 1e-3 * scale, layer.key  # a visible update
                err = np.abs(got[layer.component][layer.key] - want).max() / scale
                assert err <= TOLERANCE, (layer.key, err)
                worst = max(worst, err)
        loras.clear()
        restored = _weights(ours)
        for component, weights in base.items():
            for key, value in weights.items():
                np.testing.assert_array_equal(restored[component][key], value, err_msg=key)
    finally:
        loras.clear()
    return worst


# -- IA3 ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ia3_file(tmp_path_factory: pytest.TempPathFactory,
             components: Any) -> tuple[Path, dict[Layer, Expected]]:
    """network_ia3: W' = W + multiplier * W * w, w per output row, or per input column where
    `on_input` (LyCORIS's int64 scalar) is 1; on a conv, per channel as LyCORIS trains it."""
    rng = np.random.default_rng(5)
    tensors, expected = {}, {}
    for i, layer in enumerate(_layers(components, torch.nn.Linear, torch.nn.Conv2d)):
        on_input = i % 2
        size = layer.shape[on_input]
        factors = rng.standard_normal(size).astype(np.float32) * 0.3
        stored = factors.reshape(1, size, 1, 1) if len(layer.shape) == 4 else factors
        tensors[f"{layer.name}.weight"] = stored
        tensors[f"{layer.name}.on_input"] = np.array(on_input, np.int64)
        column = factors.astype(np.float64).reshape(
            [-1 if axis == on_input else 1 for axis in range(len(layer.shape))])

        def formula(w: np.ndarray, m: float, column: np.ndarray = column) -> np.ndarray:
            return w * (1 + m * column)

        expected[layer] = formula
    return _save(tmp_path_factory.mktemp("ia3") / "ia3.safetensors", tensors), expected


def test_ia3_scales_rows_or_columns(ours: Any, ia3_file: Any) -> None:
    path, expected = ia3_file
    assert {m.kind for m in LoraFile.load(path).modules.values()} == {"ia3"}
    print(f"IA3: max error {_check(ours, [path], expected):.2e} of max|W'|")


def test_ia3_matches_peft_merge(ours: Any, ia3_file: Any, components: Any) -> None:
    """PEFT's IA3 (ia3_l per output row, per input column on a feed-forward layer) merged with
    ia3_l = 1 + w gives the same linear weights as the file at multiplier 1 (PEFT also scales
    the bias of an output-row IA3, which the WebUI and LyCORIS's merge leave alone)."""
    peft = pytest.importorskip("peft")
    path, _ = ia3_file
    modules = {m.key.rpartition(".")[0]: m for m in LoraFile.load(path).modules.values()}
    base = _weights(ours)
    loras = LoraManager(ours)
    try:
        loras.set([(path, 1.0, 1.0)])
        got = _weights(ours)
    finally:
        loras.clear()
    checked = 0
    for layer in _layers(components, torch.nn.Linear):
        t = modules[layer.name].tensors
        linear = torch.nn.Linear(layer.shape[1], layer.shape[0], bias=False)
        linear.weight.data = torch.from_numpy(base[layer.component][layer.key].copy())
        on_input = bool(t["on_input"])
        wrapped = peft.tuners.ia3.layer.Linear(linear, "ia3", peft.IA3Config(),
                                               is_feedforward=on_input)
        factors = torch.from_numpy(1 + t["weight"].astype(np.float32))
        wrapped.ia3_l["ia3"].data = factors.reshape((1, -1) if on_input else (-1, 1))
        wrapped.merge()
        want = wrapped.get_base_layer().weight.detach().numpy()
        np.testing.assert_allclose(got[layer.component][layer.key], want, rtol=0,
                                   atol=TOLERANCE * np.abs(want).max(), err_msg=layer.key)
        checked += 1
    assert checked > 50


# -- OFT, BOFT ---------------------------------------------------------------------------------

def _cayley(blocks: np.ndarray, constraint: float) -> np.ndarray:
    """(I - S)^-1 (I + S) of each block's skew part S, the S scaled together to a norm of at
    most `constraint` (0: none), as LyCORIS's diag-OFT writes it."""
    skew = blocks.astype(np.float64) - np.swapaxes(blocks, -1, -2)
    norm = np.sqrt(np.sum(skew * skew))
    if constraint and norm > constraint:
        skew = skew * constraint / norm
    eye = np.eye(blocks.shape[-1])
    rotations = np.linalg.solve(eye - skew, eye + skew)
    assert np.allclose(np.swapaxes(rotations, -1, -2) @ rotations, eye)  # orthogonal
    return rotations


def _block_diagonal(blocks: np.ndarray) -> np.ndarray:
    count, size = blocks.shape[:2]
    whole = np.zeros((count * size, count * size))
    for k in range(count):
        whole[k * size:(k + 1) * size, k * size:(k + 1) * size] = blocks[k]
    return whole


def _butterfly(stages: np.ndarray) -> np.ndarray:
    """BOFT's matrix: per stage P^T D P, P the permutation taking row (c, g, j) to (c, j, g)
    (g of 2, j of 2^i * n/2), D the stage's rotations block-diagonal, stage 0 applied first."""
    size = stages.shape[2]
    out = stages.shape[1] * size
    whole = np.eye(out)
    for i, stage in enumerate(stages):
        order = np.arange(out).reshape(-1, 2, 2 ** i * (size // 2)).swapaxes(1, 2).reshape(-1)
        permute = np.eye(out)[order]  # permute @ x == x[order]
        whole = permute.T @ _block_diagonal(stage) @ permute @ whole
    return whole


def _rotation_formula(turn: np.ndarray, rescale: np.ndarray | None) -> Expected:
    """W + m * (rescale * turn @ W - W), W flattened to (out, rest)."""
    factors = 1.0 if rescale is None else rescale.astype(np.float64).reshape(-1, 1)

    def formula(w: np.ndarray, m: float) -> np.ndarray:
        turned = factors * (turn @ w.reshape(w.shape[0], -1))
        return w + m * (turned.reshape(w.shape) - w)

    return formula


def _oft_layer(rng: np.random.Generator, layer: Layer, form: int
               ) -> tuple[dict[str, np.ndarray], Expected]:
    """One layer's tensors (suffix -> value) and formula in form 0: kohya's OFT (its alpha
    clamping the blocks), 1: kohya's without alpha, 2: LyCORIS's diag-OFT with rescale and an
    alpha too large to clamp, 3: LyCORIS's older `oft_diag` (rotations as stored, here not
    even orthogonal), 4: BOFT (2 stages of 4-row blocks, clamped, with rescale)."""
    out = layer.shape[0]
    size = 4 if out % 4 == 0 else out
    if form == 4:
        blocks = (rng.standard_normal((2, out // 4, 4, 4)) * 0.2).astype(np.float32)
    else:
        blocks = (rng.standard_normal((out // size, size, size)) * 0.2).astype(np.float32)
    skew = blocks.astype(np.float64) - np.swapaxes(blocks, -1, -2)
    norm = np.sqrt(np.sum(skew * skew))
    alpha = {0: 0.5 * norm / out, 1: None, 2: 1.0 + norm / out, 3: None, 4: 0.7 * norm / out}
    rescale = None
    if form in (2, 4):
        rescale = (1 + rng.standard_normal((out, *[1] * (len(layer.shape) - 1))) * 0.2).astype(
            np.float32)
    tensors = {"rescale": rescale} if rescale is not None else {}
    if alpha[form] is not None:
        tensors["alpha"] = np.array(alpha[form], np.float32)
    if form == 3:
        blocks = (np.eye(size) + rng.standard_normal(blocks.shape) * 0.1).astype(np.float32)
        tensors["oft_diag"] = blocks
        return tensors, _rotation_formula(_block_diagonal(blocks.astype(np.float64)).T, None)
    tensors["oft_blocks"] = blocks
    rotations = _cayley(blocks, (alpha[form] or 0.0) * out)
    turn = _butterfly(rotations) if form == 4 else _block_diagonal(rotations).T
    return tensors, _rotation_formula(turn, rescale)


@pytest.fixture(scope="module")
def oft_file(tmp_path_factory: pytest.TempPathFactory,
             components: Any) -> tuple[Path, dict[Layer, Expected]]:
    """network_oft: W' = W + m * (rescale * R^T W - W) per block of rows (kohya's and LyCORIS's
    OFT, LyCORIS's older oft_diag), BOFT's butterfly B in place of R^T; alpha clamps the skew
    blocks (alpha * out)."""
    rng = np.random.default_rng(6)
    tensors, expected, forms = {}, {}, set()
    for i, layer in enumerate(_layers(components, torch.nn.Linear, torch.nn.Conv2d)):
        form = i % 5 if layer.shape[0] % 8 == 0 or i % 5 != 4 else 0
        parts, expected[layer] = _oft_layer(rng, layer, form)
        tensors.update({f"{layer.name}.{part}": value for part, value in parts.items()})
        forms.add(form)
    assert forms == {0, 1, 2, 3, 4}
    return _save(tmp_path_factory.mktemp("oft") / "oft.safetensors", tensors), expected


def test_oft_and_boft_rotate_the_output_rows(ours: Any, oft_file: Any) -> None:
    path, expected = oft_file
    assert {m.kind for m in LoraFile.load(path).modules.values()} == {"oft"}
    print(f"OFT/BOFT: max error {_check(ours, [path], expected):.2e} of max|W'|")


def test_stacked_updates_apply_in_order(ours: Any, ia3_file: Any, oft_file: Any) -> None:
    """IA3 then OFT on the same layers: each applies to the weight the one before it left (the
    WebUI's loop over its networks), so OFT rotates the IA3-scaled weight."""
    (ia3, scaled), (oft, rotated) = ia3_file, oft_file
    rotation = {(layer.component, layer.key): formula for layer, formula in rotated.items()}

    def stacked(first: Expected, then: Expected) -> Expected:
        return lambda w, m: then(first(w, m), m)

    expected = {layer: stacked(formula, rotation[layer.component, layer.key])
                for layer, formula in scaled.items()}
    print(f"IA3 + OFT: max error {_check(ours, [ia3, oft], expected):.2e} of max|W'|")


# -- GLoRA -------------------------------------------------------------------------------------

def test_glora_adds_a_weight_product(tmp_path: Path, ours: Any, components: Any) -> None:
    """network_glora: W' = W + m * (W a2 a1 + b2 b1) on linear layers, its alpha unused (the
    WebUI scales GLoRA by 1)."""
    rng = np.random.default_rng(7)
    tensors, expected = {}, {}
    for layer in _layers(components, torch.nn.Linear):
        out, inp = layer.shape
        parts = {name: (rng.standard_normal(shape) * 0.2).astype(np.float32)
                 for name, shape in (("a1", (3, inp)), ("a2", (inp, 3)), ("b1", (2, inp)),
                                     ("b2", (out, 2)))}
        tensors.update({f"{layer.name}.{name}.weight": v for name, v in parts.items()})
        tensors[f"{layer.name}.alpha"] = np.array(1.0, np.float32)
        a1, a2, b1, b2 = (parts[name].astype(np.float64) for name in ("a1", "a2", "b1", "b2"))

        def formula(w: np.ndarray, m: float, a: np.ndarray = a2 @ a1,
                    b: np.ndarray = b2 @ b1) -> np.ndarray:
            return w + m * (np.einsum("oi,ij->oj", w, a) + b)

        expected[layer] = formula
    path = _save(tmp_path / "glora.safetensors", tensors)
    assert {m.kind for m in LoraFile.load(path).modules.values()} == {"glora"}
    print(f"GLoRA: max error {_check(ours, [path], expected):.2e} of max|W'|")


# -- norm layers -------------------------------------------------------------------------------

def test_norm_layers_get_their_differences(tmp_path: Path, ours: Any, components: Any) -> None:
    """network_norm: a LayerNorm's or GroupNorm's weight + m * w_norm, its bias + m * b_norm
    (the UNet's and the text encoder's, LDM's resnet names too)."""
    rng = np.random.default_rng(8)
    tensors, expected = {}, {}
    norms = _layers(components, torch.nn.LayerNorm, torch.nn.GroupNorm)
    for layer in norms:
        path = layer.key.removesuffix(".weight")
        if layer.component == "text_encoder":
            path = "text_model." + path
        for part, name in (("weight", "w_norm"), ("bias", "b_norm")):
            diff = (rng.standard_normal(layer.shape) * 0.3).astype(np.float32)
            tensors[f"{layer.name}.{name}"] = diff

            def formula(w: np.ndarray, m: float, diff: np.ndarray = diff) -> np.ndarray:
                return w + m * diff.astype(np.float64)

            expected[Layer(layer.component, path, layer.shape, part)] = formula
    ldm = "lora_unet_input_blocks_1_0_in_layers_0"  # down_blocks.0.resnets.0.norm1
    assert "lora_unet_down_blocks_0_resnets_0_norm1.w_norm" in tensors
    for name in ("w_norm", "b_norm"):
        tensors[f"{ldm}.{name}"] = tensors.pop(f"lora_unet_down_blocks_0_resnets_0_norm1.{name}")
    path = _save(tmp_path / "norm.safetensors", tensors)
    assert {m.kind for m in LoraFile.load(path).modules.values()} == {"full"}
    assert len(norms) > 40 and len(expected) == 2 * len(norms)
    print(f"norm: max error {_check(ours, [path], expected):.2e} of max|W'|")


# -- bad files ---------------------------------------------------------------------------------

_LAYER = "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q"  # (64, 64)


@pytest.mark.nodevice
@pytest.mark.parametrize(("tensors", "message"), [
    ({f"{_LAYER}.weight": np.ones(64, np.float32)}, "lacks its on_input"),
    ({f"{_LAYER}.weight": np.ones((64, 2), np.float32), f"{_LAYER}.on_input": np.array(0)},
     "expected a vector"),
    ({f"{_LAYER}.rescale": np.ones((64, 1), np.float32)}, r"lacks its oft_blocks \(or oft_diag"),
    ({f"{_LAYER}.oft_blocks": np.ones((64, 64), np.float32)}, r"expected \(blocks, n, n\)"),
    ({f"{_LAYER}.oft_diag": np.ones((2, 16, 4, 4), np.float32)}, r"expected \(blocks, n, n\)"),
    ({f"{_LAYER}.oft_blocks": np.ones((4, 16, 16), np.float32),
      f"{_LAYER}.oft_diag": np.ones((4, 16, 16), np.float32)}, "mixes two formats"),
    ({f"{_LAYER}.oft_blocks": np.ones((4, 16, 16), np.float32),
      f"{_LAYER}.dora_scale": np.ones((64, 1), np.float32)}, "DoRA"),
    ({f"{_LAYER}.a1.weight": np.ones((4, 64), np.float32)}, "lacks its a2 and b1 and b2"),
    ({f"{_LAYER}.{name}.weight": np.ones(shape, np.float32) for name, shape in (
        ("a1", (64, 4)), ("a2", (4, 64)), ("b1", (32, 4)), ("b2", (4, 64)))},
     "the WebUI's layout"),
])
def test_malformed_files_are_refused(tmp_path: Path, tensors: dict[str, np.ndarray],
                                     message: str) -> None:
    path = _save(tmp_path / "bad.safetensors", tensors)
    with pytest.raises(LoraError, match=message) as error:
        LoraFile.load(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(("tensors", "message"), [
    ({f"{_LAYER}.weight": np.ones(63, np.float32), f"{_LAYER}.on_input": np.array(1)},
     "scales 63 input columns"),
    ({f"{_LAYER}.oft_blocks": np.ones((3, 4, 4), np.float32)}, "3 blocks of 4 rows"),
    ({f"{_LAYER}.oft_blocks": np.ones((6, 16, 4, 4), np.float32)}, "6 butterfly stages"),
    ({f"{_LAYER}.oft_blocks": np.ones((4, 16, 16), np.float32),
      f"{_LAYER}.rescale": np.ones(32, np.float32)}, "32 factors"),
    ({f"{_LAYER}.{name}.weight": np.ones(shape, np.float32) for name, shape in (
        ("a1", (4, 64)), ("a2", (64, 4)), ("b1", (4, 64)), ("b2", (32, 4)))},
     r"a \(32, 64\) linear weight"),
    ({f"{_LAYER}.{name}.weight": np.ones(shape, np.float32) for name, shape in (  # LyCORIS's
        ("a1", (64, 4)), ("a2", (4, 64)), ("b1", (64, 4)), ("b2", (4, 64)))},  # newer layout
     r"WebUI's GLoRA layout, it updates a \(4, 4\)"),
])
def test_files_for_other_shapes_change_nothing(tmp_path: Path, ours: Any,
                                               tensors: dict[str, np.ndarray],
                                               message: str) -> None:
    path = _save(tmp_path / "other.safetensors", tensors)
    loras = LoraManager(ours)
    before = ours.unet.state_dict()
    with pytest.raises(LoraError, match=message):
        loras.set([(path, 1.0, 1.0)])
    assert loras.patched() == []
    after = ours.unet.state_dict()
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value, err_msg=key)

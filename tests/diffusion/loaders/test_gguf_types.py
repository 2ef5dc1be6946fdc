"""GGUF types beyond those the GPU keeps, and a Q4_1 UNet, as docs/models.md states them:
Q2_K, Q3_K and the IQ types are expanded to floats on loading, equal to gguf's own dequantize;
a UNet whose every weight is Q4_1 loads kept quantized and draws what its dequantized values
draw. gguf-py cannot quantize to Q2_K, Q3_K or IQ4_*: those blocks are written raw, random
bytes with finite scales, so every bit pattern of the quants is exercised."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

gguf = pytest.importorskip("gguf", reason="GGUF needs the gguf package (diffusion extra)")
torch = pytest.importorskip("torch")
from sd_tiny import state_dict, tiny_unet  # noqa: E402

import gpucore  # noqa: E402
import gpustd  # noqa: E402
from diffusion.loaders.formats.gguf_file import GGUFFile  # noqa: E402
from diffusion.loaders.formats.gguf_write import write_gguf  # noqa: E402
from diffusion.loaders.sd.gguf_unet import load_unet_gguf  # noqa: E402
from gpustd.nn.quantized import quantized_weights  # noqa: E402

Q = gguf.GGMLQuantizationType
# where each block keeps its float16 scales (ggml's block_q2_K: scales, qs, d, dmin; block_q3_K:
# hmask, qs, scales, d; every IQ block but IQ1_M starts with d; IQ1_M packs its d into the top
# 4 bits of its four 16-bit scales, which follow 32 qs and 16 qh bytes)
SCALES = {Q.Q2_K: (80, 82), Q.Q3_K: (108,), Q.IQ4_NL: (0,), Q.IQ4_XS: (0,), Q.IQ2_XXS: (0,),
          Q.IQ2_XS: (0,), Q.IQ2_S: (0,), Q.IQ3_XXS: (0,), Q.IQ3_S: (0,), Q.IQ1_S: (0,),
          Q.IQ1_M: ()}


def _raw_blocks(rng: np.random.Generator, qtype: object, rows: int, row: int) -> np.ndarray:
    """rows x row values of `qtype` as stored: random quants, float16 scales of either sign."""
    values, nbytes = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, (rows * row // values, nbytes), dtype=np.uint8)
    scale = rng.uniform(0.001, 0.02, len(blocks)) * rng.choice([-1, 1], len(blocks))
    for offset in SCALES[qtype]:
        blocks[:, offset:offset + 2] = scale.astype(np.float16).view(np.uint8).reshape(-1, 2)
    if qtype == Q.IQ1_M:
        bits = scale.astype(np.float16).view(np.uint16)
        for k in range(4):  # the high byte of scale word k: its top nibble is d's nibble k
            high = blocks[:, 48 + 2 * k + 1]
            blocks[:, 48 + 2 * k + 1] = (high & 0x0F) | (((bits >> (4 * k)) & 0xF) << 4)
    return blocks.reshape(rows, -1)


def _write(path, tensors: list[tuple[str, np.ndarray, object]]) -> None:
    """(name, array, type) -> a GGUF file; float arrays as f32, uint8 block arrays raw."""
    writer = gguf.GGUFWriter(path, arch="sd1")
    for name, array, qtype in tensors:
        if qtype is None:
            writer.add_tensor(name, np.asarray(array, np.float32))
        else:
            writer.add_tensor(name, array, raw_shape=array.shape, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.nodevice
@pytest.mark.parametrize("qtype, shape", [
    (Q.Q2_K, (3, 512)), (Q.Q3_K, (5, 256)), (Q.IQ4_NL, (7, 96)), (Q.IQ4_XS, (2, 768)),
    *((q, (2, 512)) for q in (Q.IQ2_XXS, Q.IQ2_XS, Q.IQ2_S, Q.IQ3_XXS, Q.IQ3_S, Q.IQ1_S,
                              Q.IQ1_M))], ids=lambda v: getattr(v, "name", None))
def test_other_types_read_as_gguf_dequantizes_them(tmp_path, qtype, shape) -> None:
    rng = np.random.default_rng(int(qtype))
    blocks = _raw_blocks(rng, qtype, *shape)
    path = tmp_path / "types.gguf"
    _write(path, [("w", blocks, qtype), ("b", rng.standard_normal(shape[0]), None)])
    file = GGUFFile(path)
    got = file.read("w")
    want = gguf.quants.dequantize(blocks, qtype)
    assert file.format("w") == qtype.name.lower() and file.shape("w") == shape
    assert got.shape == shape and got.dtype == np.float32 and np.isfinite(got).all()
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(file.read("w", rows=(1, 2)), want[1:2])
    assert len(np.unique(got)) > 40  # the random blocks give varied values


def test_other_types_are_expanded_on_loading(first_device: gpucore.Device, tmp_path) -> None:
    """A model's Q2_K, Q3_K, IQ4_XS and IQ4_NL Linear weights load as floats (the loaders'
    load_component, as for a UNet or text encoder GGUF), each equal to gguf's dequantize,
    while its Q4_1 weight stays quantized: what the file holds, layer by layer."""
    from diffusion.loaders.component import load_component
    from diffusion.loaders.weights import ComponentWeights, TensorRef
    from gpustd.nn import Linear, Module

    rng = np.random.default_rng(52)
    shapes = {Q.Q2_K: (3, 512), Q.Q3_K: (5, 256), Q.IQ4_XS: (2, 768), Q.IQ4_NL: (7, 96)}
    stored = {f"{qtype.name.lower()}.weight": (_raw_blocks(rng, qtype, *shape), qtype)
              for qtype, shape in shapes.items()}
    kept = rng.standard_normal((4, 64)).astype(np.float32)
    tensors = [(name, blocks, qtype) for name, (blocks, qtype) in stored.items()]
    tensors.append(("q4_1.weight", gguf.quants.quantize(kept, Q.Q4_1), Q.Q4_1))
    path = tmp_path / "mixed.gguf"
    _write(path, tensors)

    class Layers(Module):
        def __init__(self) -> None:
            for qtype, (rows, row) in {**shapes, Q.Q4_1: kept.shape}.items():
                setattr(self, qtype.name.lower(), Linear(row, rows, bias=False,
                                                         device=first_device))

    file = GGUFFile(path)
    refs = {k: TensorRef(file, k, file.shape(k)) for k in file.keys()}
    model = load_component(Layers(), ComponentWeights("layers", {}, refs))
    assert set(quantized_weights(model)) == {"q4_1.weight"}
    parameters = dict(model.named_parameters())
    for name, (blocks, qtype) in stored.items():
        want = gguf.quants.dequantize(blocks, qtype)
        np.testing.assert_array_equal(parameters[name].numpy(), want, err_msg=name)


def test_a_q4_1_unet_draws_its_dequantized_values(first_device: gpucore.Device,
                                                  tmp_path) -> None:
    """Every weight whose rows hold whole 32-value blocks is Q4_1, kept quantized on the GPU;
    the UNet's output is torch's UNet holding the dequantized values (gguf's), to float32
    error, and the quantization visibly moved it from the float32 model's."""
    original = tiny_unet()
    weights = state_dict(original)
    path = tmp_path / "unet-q4_1.gguf"
    counts = write_gguf(path, weights.items(), "q4_1", architecture="sd1")
    eligible = [k for k, v in weights.items()
                if v.ndim >= 2 and math.prod(v.shape[1:]) % 32 == 0]
    assert counts["q4_1"] == len(eligible) > 100
    unet = load_unet_gguf(path, device=first_device, config=dict(original.config))
    held = quantized_weights(unet)
    assert set(held) == set(eligible) and {w.format for w in held.values()} == {"q4_1"}

    file = GGUFFile(path)
    reference = copy.deepcopy(original)
    reference.load_state_dict({k: torch.from_numpy(file.read(k).copy()) for k in file.keys()})
    rng = np.random.default_rng(41)
    sample = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
    context = rng.standard_normal((1, 7, 32)).astype(np.float32)
    t = np.array([421.0], np.float32)
    got = unet(gpustd.asarray(sample, device=first_device), t,
               gpustd.asarray(context, device=first_device)).numpy()
    with torch.no_grad():
        args = (torch.from_numpy(sample), torch.from_numpy(t), torch.from_numpy(context))
        exact = reference(*args).sample.numpy()
        full = original(*args).sample.numpy()
    scale = np.abs(exact).max()
    # measured on lavapipe: 1.3e-6 of the largest value (float32 sums in another order)
    assert np.abs(got - exact).max() <= 1.5e-5 * scale
    # Q4_1's own error (0.26 of it measured) is 10x the tolerance and more: the blocks ran
    assert np.abs(exact - full).max() > 1.5e-4 * scale

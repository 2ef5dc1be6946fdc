"""GGUF UNets: files as ComfyUI-GGUF writes them (LDM names, prefix stripped, conv kernels as
matrices with their shape in metadata) load into our UNet with the weights kept quantized;
`python -m diffusion quantize` writes them; damaged files name the tensor and byte offset."""

from __future__ import annotations

import gc

import numpy as np
import pytest

gguf = pytest.importorskip("gguf", reason="GGUF needs the gguf package (diffusion extra)")
torch = pytest.importorskip("torch")
from ldm_files import ldm_unet  # noqa: E402
from sd_tiny import state_dict, tiny_unet, write_pipeline  # noqa: E402

import gpucore  # noqa: E402
import gpustd  # noqa: E402
from diffusion.cli.main import main  # noqa: E402
from diffusion.loaders import WeightsError  # noqa: E402
from diffusion.loaders.formats.gguf_file import GGUFFile  # noqa: E402
from diffusion.loaders.formats.gguf_write import plan_format, write_gguf  # noqa: E402
from diffusion.loaders.sd.gguf_unet import load_unet_gguf  # noqa: E402
from gpustd import nn  # noqa: E402
from gpustd.nn.offload import parameter_bytes  # noqa: E402
from gpustd.nn.quantized import quantized_weights  # noqa: E402


def _inputs(seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((1, 4, 8, 8)).astype(np.float32), np.array([421.0], np.float32),
            rng.standard_normal((1, 7, 32)).astype(np.float32))


def _ours(unet, device, seed=0):
    sample, t, context = _inputs(seed)
    return unet(gpustd.asarray(sample, device=device), t,
                gpustd.asarray(context, device=device)).numpy()


def _torch(reference, seed=0):
    with torch.no_grad():
        return reference(*(torch.from_numpy(a) for a in _inputs(seed))).sample.numpy()


def _dequantized_reference(path, prefix=""):
    """torch's UNet holding exactly the values the GGUF file stores (gguf's own dequantize)."""
    file = GGUFFile(path)
    reference = tiny_unet()
    names = {k: v for k, v in ldm_unet(state_dict(reference)).items()} if prefix else None
    values = {}
    for key in file.keys():
        values[key] = file.read(key)
    if names is not None:  # LDM key -> diffusers key
        back = {ldm[len("model.diffusion_model."):]: diffusers_key for diffusers_key, ldm in
                zip(state_dict(reference), names)}
        values = {back[k]: v for k, v in values.items()}
    reference.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in values.items()})
    return reference


# Q4_K: the tiny model's rows are not whole 256-value super-blocks, so most take llama.cpp's
# Q5_0 fallback; 5 bits put torch's UNet ~8x further from float32 than 8 (the last bound)
@pytest.mark.parametrize("format, formats, bound", [("q8_0", {"q8_0"}, 0.05),
                                                    ("q4_k", {"q4_k", "q5_0"}, 0.25)])
def test_comfyui_style_unet_within_quantization_error(first_device: gpucore.Device, tmp_path,
                                                      format: str, formats: set[str],
                                                      bound: float) -> None:
    original = tiny_unet()
    weights = state_dict(original)
    ldm = ldm_unet(weights)  # insertion order follows weights' order
    path = tmp_path / f"unet-{format}.gguf"
    counts = write_gguf(path, ((k[len("model.diffusion_model."):], v) for k, v in ldm.items()),
                        format, architecture="sd1")
    # matrices and 3x3 convs; biases, norms
    assert sum(counts.get(f, 0) for f in formats) > 20 and counts["f32"] > 20
    # head counts are not in the weights: the tiny model's config (SD1's 8 heads otherwise)
    unet = load_unet_gguf(path, device=first_device, config=dict(original.config))
    held = quantized_weights(unet)
    assert any(w.ndim == 4 for w in held.values())
    assert {w.format for w in held.values()} <= formats
    assert "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight" in held

    got = _ours(unet, first_device)
    exact = _torch(_dequantized_reference(path, prefix="ldm"))
    # the stored values, computed two ways: only float32 rounding apart
    np.testing.assert_allclose(got, exact, rtol=2e-4, atol=2e-4 * np.abs(exact).max())
    # and as far from float32 as the quantization itself puts torch's UNet (~2% mean here:
    # 32-value blocks of a tiny random model)
    full = _torch(original)
    error, quantization = np.abs(got - full).mean(), np.abs(exact - full).mean()
    assert error <= 1.01 * quantization + 1e-5, (error, quantization)
    assert quantization < bound * np.abs(full).mean()
    # captured and replayed (as the pipelines run the UNet), the scratch weights included
    sample, t, context = _inputs(0)
    step = gpustd.capture(lambda x, c: unet(x, t, c))
    x, c = gpustd.asarray(sample, device=first_device), gpustd.asarray(context, device=first_device)
    step(x, c)
    np.testing.assert_array_equal(step(x, c).numpy(), got)


def test_quantize_command(first_device: gpucore.Device, tmp_path, capsys) -> None:
    folder = write_pipeline(tmp_path / "tiny")
    out = tmp_path / "tiny-q5_1.gguf"
    assert main(["quantize", str(folder), "--type", "Q5_1", "--unet-only", str(out)]) == 0
    assert "q5_1" in capsys.readouterr().err
    # diffusers' names this time; the values are what gguf reads back (its own dequantize)
    unet = load_unet_gguf(out, device=first_device, config=dict(tiny_unet().config))
    assert {w.format for w in quantized_weights(unet).values()} == {"q5_1"}
    file = GGUFFile(out)
    for name, weight in unet.named_parameters():
        np.testing.assert_array_equal(weight.numpy(), file.read(name))
    # bad input: a clear message, exit status 2, no file
    bad = tmp_path / "x.gguf"
    assert main(["quantize", str(tmp_path / "missing"), str(bad)]) == 2
    assert main(["quantize", str(folder), "--type", "q6_k", str(bad)]) == 2
    assert "invalid choice: 'q6_k'" in capsys.readouterr().err and not bad.exists()


@pytest.mark.nodevice
def test_damaged_files_name_the_tensor_and_offset(tmp_path) -> None:
    path = tmp_path / "good.gguf"
    rng = np.random.default_rng(3)
    write_gguf(path, [("a.weight", rng.standard_normal((16, 64))),
                      ("b.bias", rng.standard_normal(5))], "q8_0", architecture="sd1")
    file = GGUFFile(path)
    assert file.format("a.weight") == "q8_0" and file.shape("a.weight") == (16, 64)
    data = path.read_bytes()
    cut = tmp_path / "cut.gguf"
    bias_at = gguf.GGUFReader(path).tensors[1].data_offset
    cut.write_bytes(data[:bias_at + 10])  # half of b.bias's 20 bytes
    with pytest.raises(WeightsError, match=rf"tensor 'b\.bias' at byte {bias_at} needs 20 "
                                           rf"bytes but the file ends at byte {bias_at + 10} "
                                           r"\(truncated\)"):
        GGUFFile(cut)
    cut.write_bytes(data[:300])
    with pytest.raises(WeightsError, match=r"tensor 'a\.weight' at byte"):
        GGUFFile(cut)
    # the type field of the first tensor's description turned into nonsense
    info = data.find(b"a.weight") + len(b"a.weight") + 4 + 2 * 8
    broken = bytearray(data)
    broken[info:info + 4] = (977).to_bytes(4, "little")
    cut.write_bytes(bytes(broken))
    with pytest.raises(WeightsError, match=r"tensor 'a\.weight' .*unknown type 977"):
        GGUFFile(cut)
    cut.write_bytes(data[:40])
    with pytest.raises(WeightsError, match=r"header .* damaged or truncated"):
        GGUFFile(cut)
    cut.write_bytes(b"not a gguf file at all")
    with pytest.raises(WeightsError, match="not a readable GGUF"):
        GGUFFile(cut)


def test_a_file_read_again_is_not_parsed_again(tmp_path, monkeypatch) -> None:
    """The registry's detectors open one file many times: its header is parsed once until the
    file changes, each GGUFFile with its own metadata dict and prefix."""
    from diffusion.loaders.formats import gguf_file

    reads = []
    real = gguf_file._read_file
    monkeypatch.setattr(gguf_file, "_read_file",
                        lambda path, gguf: reads.append(path) or real(path, gguf))
    path = tmp_path / "one.gguf"
    rng = np.random.default_rng(5)
    write_gguf(path, [("a.weight", rng.standard_normal((16, 64)))], "q8_0", architecture="sd1")
    first, second = GGUFFile(path), GGUFFile(path, prefix="model.")
    assert len(reads) == 1 and second.keys() == ["model.a.weight"]
    second.metadata["general.architecture"] = "changed"
    assert GGUFFile(path).architecture == "sd1" and len(reads) == 1
    np.testing.assert_array_equal(first.read("a.weight"), second.read("model.a.weight"))
    write_gguf(path, [("b.weight", rng.standard_normal((8, 32)))], "f16", architecture="sd1")
    assert GGUFFile(path).keys() == ["b.weight"] and len(reads) == 2  # written again: read again


@pytest.mark.nodevice
@pytest.mark.parametrize("shape, format, kind", [
    ((1280, 11520), "q4_k", "q4_k"),  # a 1280-channel 3x3 conv: whole super-blocks
    ((320, 2880), "q4_k", "q5_0"),  # a 320-channel one: llama.cpp's fallback
    ((640, 640), "q4_k", "q5_0"), ((40, 100), "q4_k", "f16"), ((320, 2880), "q8_0", "q8_0"),
    ((40, 100), "q8_0", "f16"), ((16, 32), "q4_k", "f16"), ((1280,), "q4_k", "f32")])
def test_plan_format(shape: tuple[int, ...], format: str, kind: str) -> None:
    assert plan_format(shape, format) == kind


@pytest.mark.nodevice
def test_our_q4_k_blocks_read_back_as_gguf_reads_them() -> None:
    """gguf-py cannot write Q4_K; ours (gguf_kquant) is read by gguf's own dequantize within
    Q4_0's error, on an odd number of rows and constant / all-positive sub-blocks."""
    from diffusion.loaders.formats.gguf_kquant import quantize_q4_k

    rng = np.random.default_rng(3)
    weights = rng.standard_normal((37, 512)).astype(np.float32) * 0.05
    weights[0, :32] = 0.0
    weights[1, :256] = np.abs(weights[1, :256]) + 0.3
    q4_k = gguf.GGMLQuantizationType.Q4_K
    back = gguf.quants.dequantize(quantize_q4_k(weights), q4_k)
    q4_0 = gguf.GGMLQuantizationType.Q4_0
    reference = gguf.quants.dequantize(gguf.quants.quantize(weights, q4_0), q4_0)
    error = np.abs(back - weights).mean()
    assert back.shape == weights.shape and np.isfinite(back).all()
    assert error <= 1.1 * np.abs(reference - weights).mean(), error
    np.testing.assert_array_equal(back[0, :32], 0.0)


def test_loading_peaks_at_the_quantized_size(first_device: gpucore.Device, tmp_path) -> None:
    """The UNet is built deferred (gpustd.nn.deferred): each parameter's buffer is allocated
    when its values arrive, so loading a Q8_0 file peaks at what the UNet then holds, not at
    its float32 size first (as it did before: 3.6x the loaded size here)."""
    original = tiny_unet()
    path = tmp_path / "unet-q8_0.gguf"
    write_gguf(path, ((k[len("model.diffusion_model."):], v)
                      for k, v in ldm_unet(state_dict(original)).items()), "q8_0",
               architecture="sd1")
    gc.collect()
    first_device.empty_pool()
    before = first_device.memory_stats().allocated  # other tests' kept buffers
    first_device.reset_peak_memory()
    unet = load_unet_gguf(path, device=first_device, config=dict(original.config))
    stats = first_device.memory_stats()
    loaded = stats.allocated - before
    floats = sum(v.size * 4 for v in state_dict(original).values())
    assert parameter_bytes(unet) <= loaded <= 1.02 * parameter_bytes(unet)  # size classes
    # measured: the peak is the loaded size exactly (each tensor goes straight into its own
    # buffer); the stated allowance: 1.1x plus one tensor in flight (the largest float32 one);
    # the quantized UNet must be well below its float size for this to tell them apart
    largest = max(v.size * 4 for v in state_dict(original).values())
    assert loaded + largest < 0.7 * floats, (loaded, floats)
    assert stats.peak_allocated - before <= 1.1 * loaded + largest, (
        stats.peak_allocated - before, loaded, floats)
    assert not nn.unloaded(unet)

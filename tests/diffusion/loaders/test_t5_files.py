"""T5 encoders in the files FLUX / SD3.5 users name with --text-encoder besides t5xxl_fp16:
city96's GGUFs (llama.cpp's tensor names; the matrices kept quantized) and ComfyUI's scaled
float8 safetensors. Each loads the way --text-encoder loads it (FluxPipeline.from_pretrained's
text_encoder_files, over a tiny FLUX folder whose own T5 has other weights) and is compared
with transformers' T5EncoderModel run on the weights the file holds."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("gguf", reason="GGUF files need the gguf package")
import gguf
import torch
from flow_tiny import T5_TINY, tiny_flux_pipeline, tiny_t5
from safetensors.torch import save_file
from sd_tiny import randomized
from support import assert_close
from t5_files import llama_cpp_name, write_t5_gguf, write_t5_scaled_fp8

import gpucore
from diffusion.loaders import SafetensorsFile
from diffusion.loaders.errors import WeightsError
from diffusion.loaders.formats.gguf_write import write_gguf
from diffusion.loaders.keymaps.t5_gguf import t5_gguf_refs
from diffusion.pipelines.flow.flux import FluxPipeline
from gpustd import nn
from gpustd.nn.quantized import quantized_weights

TOL = 1e-3  # as test_t5: the same weights on both sides, f32 throughout


@pytest.fixture(scope="module")
def flux_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("flux-t5")
    tiny_flux_pipeline(root, dev=False)
    return root / "flux"


def _reference(held: dict[str, np.ndarray], ids: np.ndarray,
               config: dict[str, Any] = T5_TINY) -> np.ndarray:
    import transformers

    model = transformers.T5EncoderModel(transformers.T5Config(**config)).eval()
    state = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in held.items()}
    model.load_state_dict({**state, "encoder.embed_tokens.weight": state["shared.weight"]})
    with torch.no_grad():
        return model(torch.from_numpy(ids)).last_hidden_state.numpy()


def _ids(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, T5_TINY["vocab_size"], (2, 19))


@pytest.mark.parametrize("kind", ["q8_0", "f16"])
def test_t5_gguf_as_text_encoder(first_device: gpucore.Device, flux_folder: Path,
                                 tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"t5-v1_1-xxl-encoder-{kind.upper()}.gguf"
    held = write_t5_gguf(tiny_t5(seed=11), path, kind)
    pipe = FluxPipeline.from_pretrained(flux_folder, text_encoder_files=[path],
                                        device=first_device)
    assert pipe.modules == [path.stem]
    kept = quantized_weights(pipe.text_encoder_2)
    if kind == "q8_0":  # every matrix whose 32-wide rows are Q8_0 blocks; wo's 37 are not
        layers = ("SelfAttention.q", "SelfAttention.k", "SelfAttention.v", "SelfAttention.o",
                  "DenseReluDense.wi_0", "DenseReluDense.wi_1")
        assert sorted(kept) == sorted(
            f"encoder.block.{i}.layer.{int(layer.startswith('Dense'))}.{layer}.weight"
            for i in range(T5_TINY["num_layers"]) for layer in layers)
        assert {q.format for q in kept.values()} == {"q8_0"}
    else:
        assert not kept
    ids = _ids(1)
    assert_close(pipe.text_encoder_2(ids).numpy(), _reference(held, ids), tol=TOL)


def test_t5_gguf_k_quants(first_device: gpucore.Device, tmp_path: Path) -> None:
    """A Q4_K file as llama.cpp writes one (rows that are no whole super-blocks in Q5_0), its
    config read from the shapes as for a single file's module: both types kept quantized."""
    import transformers

    from diffusion.loaders import ComponentWeights
    from diffusion.loaders.component import load_component
    from diffusion.loaders.keymaps.t5_keys import t5_config
    from diffusion.models import T5EncoderModel

    config = {**T5_TINY, "d_model": 256, "relative_attention_max_distance": 128}
    source = transformers.T5EncoderModel(transformers.T5Config(**config))
    path = tmp_path / "t5-v1_1-xxl-encoder-Q4_K_M.gguf"
    held = write_t5_gguf(randomized(source, 13), path, "q4_k")
    refs = t5_gguf_refs(path)

    def load(deferred: bool) -> tuple[Any, int, int]:
        """The model, and the bytes it holds and its load's peak above what was held before."""
        gc.collect()
        first_device.empty_pool()
        before = first_device.memory_stats().allocated
        first_device.reset_peak_memory()
        with nn.deferred(deferred):  # as the pipelines build it
            model = T5EncoderModel(t5_config(refs), device=first_device)
        model = load_component(model, ComponentWeights("text_encoder_2", t5_config(refs), refs))
        stats = first_device.memory_stats()
        return model, stats.allocated - before, stats.peak_allocated - before

    ours, loaded, peak = load(True)
    eager, _, eager_peak = load(False)
    # built deferred, the load peaks at what the model holds (one float32 tensor allowed on
    # top of 1.1x); built eagerly, at the float model's size first
    largest = max(np.asarray(v).size * 4 for v in held.values())
    assert peak <= 1.1 * loaded + largest < eager_peak, (peak, loaded, largest, eager_peak)
    del eager
    formats = {name: q.format for name, q in quantized_weights(ours).items()}
    assert formats["encoder.block.1.layer.0.SelfAttention.q.weight"] == "q4_k"  # 256 a row
    assert formats["encoder.block.1.layer.0.SelfAttention.o.weight"] == "q5_0"  # 32 a row
    ids = _ids(3)
    assert_close(ours(ids).numpy(), _reference(held, ids, config), tol=TOL)


@pytest.mark.parametrize("kind", ["q5_k", "q6_k"])
def test_t5_gguf_q5_k_q6_k(first_device: gpucore.Device, tmp_path: Path, kind: str) -> None:
    """Q5_K_M / Q6_K files: the 256-wide rows in the K-quant (random blocks: gguf-py cannot
    quantize to these types), the others in llama.cpp's fallback; kept quantized, and the
    encoder matches transformers run on what the file dequantizes to."""
    import transformers

    from diffusion.loaders import ComponentWeights
    from diffusion.loaders.component import load_component
    from diffusion.loaders.keymaps.t5_keys import t5_config
    from diffusion.models import T5EncoderModel

    config = {**T5_TINY, "d_model": 256, "relative_attention_max_distance": 128}
    source = transformers.T5EncoderModel(transformers.T5Config(**config))
    path = tmp_path / f"t5-v1_1-xxl-encoder-{kind.upper()}.gguf"
    held = write_t5_gguf(randomized(source, 17), path, kind)
    refs = t5_gguf_refs(path)
    with nn.deferred():
        model = T5EncoderModel(t5_config(refs), device=first_device)
    ours = load_component(model, ComponentWeights("text_encoder_2", t5_config(refs), refs))
    formats = {name: q.format for name, q in quantized_weights(ours).items()}
    assert formats["encoder.block.1.layer.0.SelfAttention.q.weight"] == kind  # 256 a row
    assert formats["encoder.block.1.layer.0.SelfAttention.o.weight"] == \
        {"q5_k": "q5_1", "q6_k": "q8_0"}[kind]  # 32 a row
    ids = _ids(5)
    assert_close(ours(ids).numpy(), _reference(held, ids, config), tol=TOL)


def test_scaled_fp8_t5_as_text_encoder(first_device: gpucore.Device, flux_folder: Path,
                                       tmp_path: Path) -> None:
    path = tmp_path / "t5xxl_fp8_e4m3fn_scaled.safetensors"
    held = write_t5_scaled_fp8(tiny_t5(seed=12), path)
    file = SafetensorsFile(path)
    assert sorted(file.keys()) == sorted(held)  # factors, marker and input scale hidden
    name = "encoder.block.1.layer.1.DenseReluDense.wi_0.weight"
    assert file.dtype(name) == "F8_E4M3"
    np.testing.assert_array_equal(file.read(name), held[name])
    np.testing.assert_array_equal(file.read(name, rows=(3, 9)), held[name][3:9])
    pipe = FluxPipeline.from_pretrained(flux_folder, text_encoder_files=[path],
                                        device=first_device)
    ids = _ids(2)
    assert_close(pipe.text_encoder_2(ids).numpy(), _reference(held, ids), tol=TOL)


@pytest.mark.nodevice
def test_gguf_that_is_no_t5_says_what_it_is(tmp_path: Path) -> None:
    flux = tmp_path / "flux1-dev-Q8_0.gguf"
    write_gguf(flux, [("double_blocks.0.img_attn.qkv.weight", np.ones((96, 32), np.float32))],
               "q8_0", architecture="flux")
    with pytest.raises(WeightsError, match=r"not a T5 encoder \(a FLUX transformer: give it as "
                                           r"the model.*--text-encoder takes a T5 encoder GGUF"):
        t5_gguf_refs(flux)
    # a tensor of a type nothing reads (gguf-py has no Q8_1 dequantizer)
    odd = tmp_path / "t5-odd.gguf"
    writer = gguf.GGUFWriter(odd, arch="t5encoder")
    block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_1][1]
    writer.add_tensor(llama_cpp_name("encoder.block.0.layer.0.SelfAttention.q.weight"),
                      np.zeros((32, block), np.uint8), raw_shape=(32, block),
                      raw_dtype=gguf.GGMLQuantizationType.Q8_1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(WeightsError, match=r"stored as q8_1.*use city96's Q8_0"):
        t5_gguf_refs(odd)


def test_t5_gguf_as_the_model_says_where_it_goes(first_device: gpucore.Device,
                                                 tmp_path: Path) -> None:
    from diffusion.pipelines.load import load_pipeline

    path = tmp_path / "t5-v1_1-xxl-encoder-Q8_0.gguf"
    write_t5_gguf(tiny_t5(), path, "q8_0")
    with pytest.raises(WeightsError, match=r"a T5 text encoder, which goes beside a FLUX / SD3 "
                                           r"model with --text-encoder"):
        load_pipeline(path, device=first_device)


def test_swapped_halves_are_read_as_floats(first_device: gpucore.Device,
                                           tmp_path: Path) -> None:
    """load_component keeps a GGUF matrix quantized only where it is read as stored: one
    whose halves are read exchanged (diffusers' swap_scale_shift) becomes floats."""
    from diffusion.loaders.component import load_component
    from diffusion.loaders.formats.gguf_file import GGUFFile
    from diffusion.loaders.keymaps.dit_keys import SwappedHalvesWeights
    from diffusion.loaders.weights import TensorRef
    from gpustd import nn

    values = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    write_gguf(tmp_path / "two.gguf", [("a", values), ("b", values)], "q8_0", architecture="x")
    file = GGUFFile(tmp_path / "two.gguf")
    model = nn.Module()
    model.a = nn.Linear(32, 64, bias=False, device=first_device)
    model.b = nn.Linear(32, 64, bias=False, device=first_device)
    refs = {f"{k}.weight": TensorRef(file, k, (64, 32)) for k in "ab"}  # type: ignore[arg-type]
    load_component(model, SwappedHalvesWeights("x", {}, refs, swapped={"b.weight"}))
    assert set(quantized_weights(model)) == {"a.weight"}
    stored = file.read("b")
    np.testing.assert_array_equal(model.b.weight.numpy(), np.concatenate([stored[32:],
                                                                          stored[:32]]))


@pytest.mark.nodevice
def test_comfy_quant_layouts(tmp_path: Path) -> None:
    """ComfyUI's newer layout (`weight_scale` and a `comfy_quant` JSON per layer): float8
    layers read as values times factor; nvfp4 layers (packed bytes, float8 block scales) are
    named, not misread."""
    def conf(kind: str) -> Any:
        return torch.tensor(list(f'{{"format": "{kind}"}}'.encode()), dtype=torch.uint8)

    weight = torch.randn((8, 16), generator=torch.Generator().manual_seed(0))
    scale = (weight.abs().max() / 448).reshape(())
    stored = (weight / scale).to(torch.float8_e4m3fn)
    path = tmp_path / "flux1-dev-mixed.safetensors"
    save_file({"txt_in.weight": stored, "txt_in.weight_scale": scale,
               "txt_in.input_scale": torch.ones(()), "txt_in.comfy_quant": conf("float8_e4m3fn"),
               "img_in.weight": torch.zeros((8, 16), dtype=torch.uint8),
               "img_in.weight_scale": torch.ones((8, 2)).to(torch.float8_e4m3fn),
               "img_in.weight_scale_2": torch.ones(()), "img_in.comfy_quant": conf("nvfp4"),
               "img_in.bias": torch.zeros(8)}, str(path))
    file = SafetensorsFile(path)
    assert sorted(file.keys()) == ["img_in.bias", "img_in.weight", "txt_in.weight"]
    np.testing.assert_array_equal(file.read("txt_in.weight"), (stored.float() * scale).numpy())
    with pytest.raises(WeightsError, match=r"'img_in.weight' is stored as U8.*nvfp4"):
        file.read("img_in.weight")

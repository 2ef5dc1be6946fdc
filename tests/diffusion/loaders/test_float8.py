"""float8 (e4m3fn, e5m2) and bfloat16 safetensors tensors read as float32 exactly as torch
converts them: every one of the 256 float8 codes, and files written by safetensors.torch."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

from diffusion.loaders import SafetensorsFile  # noqa: E402
from diffusion.loaders.formats.float8 import FLOAT8  # noqa: E402

TORCH_TYPES = {"F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}


@pytest.mark.nodevice
@pytest.mark.parametrize("kind", list(FLOAT8))
def test_every_float8_code_as_torch(kind: str) -> None:
    codes = torch.arange(256, dtype=torch.int32).to(torch.uint8)
    want = codes.view(TORCH_TYPES[kind]).float().numpy()
    np.testing.assert_array_equal(FLOAT8[kind], want)  # NaNs where torch has them, +-0 too
    assert np.array_equal(np.signbit(FLOAT8[kind]), np.signbit(want))


@pytest.mark.nodevice
def test_float8_and_bfloat16_files(tmp_path) -> None:
    gen = torch.Generator().manual_seed(0)
    values = torch.randn((7, 13), generator=gen) * 40
    tensors = {"e4m3": values.to(torch.float8_e4m3fn), "e5m2": values.to(torch.float8_e5m2),
               "bf16": values.to(torch.bfloat16), "f32": values}
    path = tmp_path / "model-fp8.safetensors"
    safetensors_torch.save_file(tensors, str(path))
    file = SafetensorsFile(path)
    assert [file.dtype(k) for k in tensors] == ["F8_E4M3", "F8_E5M2", "BF16", "F32"]
    for key, tensor in tensors.items():
        got = file.read(key)
        assert got.dtype == np.float32 and got.shape == (7, 13)
        np.testing.assert_array_equal(got, tensor.float().numpy())
    np.testing.assert_array_equal(file.read("e4m3", rows=(2, 5)),
                                  tensors["e4m3"][2:5].float().numpy())

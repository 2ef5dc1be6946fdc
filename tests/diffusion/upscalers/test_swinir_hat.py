"""SwinIR and HAT on gpustd against spandrel on torch CPU: tiny random networks of each kind,
loaded from their state dicts by both (spandrel's detection and ours), on sizes that are no
multiple of the window (so both reflect-pad, and the shifted windows' mask is computed for a
size other than the training one)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="test-only reference (extra: reference)")

from test_model_upscalers import _spandrel  # noqa: E402

spandrel = _spandrel()
from spandrel.architectures.SwinIR import SwinIR as TorchSwinIR  # noqa: E402

from diffusion.upscalers.models import _forward, find_upscalers, load_upscaler_model  # noqa: E402

CONFIGS = {  # the kinds spandrel tells apart, each as small as it goes
    "classical-x2": dict(upsampler="pixelshuffle", upscale=2, depths=[2, 1], num_heads=[2, 3]),
    "real-x4-3conv": dict(upsampler="nearest+conv", upscale=4, depths=[2],
                          num_heads=[2], resi_connection="3conv"),
    "lightweight-x3": dict(upsampler="pixelshuffledirect", upscale=3, depths=[2],
                           num_heads=[3]),
    "jpeg-window7": dict(upsampler="", upscale=1, depths=[2], num_heads=[2], window_size=7,
                         img_size=14, img_range=255.0),
}


def _swinir(config, seed=0):
    torch.manual_seed(seed)
    options = {"img_size": 8, "embed_dim": 12, "window_size": 4, "mlp_ratio": 2.0, **config}
    model = TorchSwinIR(**options).eval()
    with torch.no_grad():  # random weights of every kind, the position bias large enough to matter
        for name, value in model.named_parameters():
            value.copy_(torch.randn_like(value) * (0.5 if "bias_table" in name else 0.2))
    return model


@pytest.mark.parametrize("kind", CONFIGS)
def test_swinir_equals_spandrel(first_device, kind):
    state = {k: v.clone() for k, v in _swinir(CONFIGS[kind]).state_dict().items()}
    reference = spandrel.ModelLoader().load_from_state_dict(dict(state)).eval()  # DropPath off
    assert reference.architecture.id == "SwinIR"
    ours = load_upscaler_model({k: v.numpy() for k, v in state.items()}, device=first_device)
    assert ours.scale == reference.scale == CONFIGS[kind]["upscale"]
    image = torch.rand(1, 3, 13, 11, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = reference.model(image)[0].numpy()
    got = _forward(ours, image[0].numpy())
    assert got.shape == want.shape
    error = np.abs(got - want).max() / np.abs(want).max()
    assert error < 2e-5, f"{kind}: relative error {error:.2e}"


def test_swinir_file_is_found_by_its_webui_name(first_device, tmp_path):
    torch.save({"params_ema": _swinir(CONFIGS["real-x4-3conv"]).state_dict()},
               tmp_path / "SwinIR_4x.pth")
    found = find_upscalers(tmp_path)
    assert list(found) == ["SwinIR 4x"]
    model = load_upscaler_model(found["SwinIR 4x"], dtype="auto", device=first_device)
    assert model.upsampler == "nearest+conv" and model.scale == 4 and model.three_conv
    assert model.dtype == np.float32  # "auto" keeps SwinIR out of half, as spandrel does


HAT_CONFIGS = {
    "x2": dict(upscale=2, depths=[2], num_heads=[2]),
    "x3-two-groups": dict(upscale=3, depths=[1, 2], num_heads=[3, 2], resi_connection="identity"),
}


@pytest.mark.parametrize("kind", HAT_CONFIGS)
def test_hat_equals_spandrel(first_device, kind):
    from spandrel.architectures.HAT import HAT as TorchHAT

    torch.manual_seed(0)
    model = TorchHAT(embed_dim=12, window_size=4, compress_ratio=3, squeeze_factor=4,
                     overlap_ratio=0.5, mlp_ratio=2.0, num_feat=8, **HAT_CONFIGS[kind]).eval()
    with torch.no_grad():
        for name, value in model.named_parameters():
            value.copy_(torch.randn_like(value) * (0.5 if "bias_table" in name else 0.2))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    reference = spandrel.ModelLoader().load_from_state_dict(dict(state)).eval()
    assert reference.architecture.id == "HAT"
    ours = load_upscaler_model({k: v.numpy() for k, v in state.items()}, dtype="auto",
                               device=first_device)
    assert ours.scale == reference.scale and ours.dtype == np.float32
    image = torch.rand(1, 3, 13, 11, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = reference.model(image)[0].numpy()
    got = _forward(ours, image[0].numpy())
    assert got.shape == want.shape
    error = np.abs(got - want).max() / np.abs(want).max()
    assert error < 2e-5, f"{kind}: relative error {error:.2e}"


def test_swinir_tiled_equals_untiled(first_device, tmp_path):
    """Tiles whose corners fall on the window grid see the same windows as one pass; with the
    context wider than the network's reach (two blocks of 4-pixel windows, one shifted, and the
    convs), the seams vanish. A tile asked for off the grid (6, 10) is moved onto it (8, 12):
    left there, every window in it would shift (255 levels off at the seams)."""
    from diffusion.upscalers.models import ModelUpscaler

    torch.save({"params_ema": _swinir(CONFIGS["real-x4-3conv"]).state_dict()},
               tmp_path / "SwinIR_4x.pth")
    image = (np.random.default_rng(4).random((14, 17, 3)) * 255).round().astype(np.uint8)
    whole = ModelUpscaler("SwinIR 4x", tmp_path / "SwinIR_4x.pth", first_device, tile=0)
    tiled = ModelUpscaler("SwinIR 4x", tmp_path / "SwinIR_4x.pth", first_device, tile=6, pad=10)
    once = whole.run(image).astype(int)
    assert once.shape == (56, 68, 3) and once.std() > 10  # a picture, not a flat field
    assert np.abs(tiled.run(image).astype(int) - once).max() <= 1

"""Tiny upscaler files for the server and page tests: Real-ESRGAN's release layouts with random
weights and a fraction of the real width, so a pass over a small picture takes milliseconds."""

from __future__ import annotations

from pathlib import Path


def write_x4plus(folder: Path, features: int = 4, growth: int = 2) -> Path:
    """folder/RealESRGAN/RealESRGAN_x4plus.pth (the WebUI's models/RealESRGAN; "R-ESRGAN 4x+" by
    name) in Real-ESRGAN's release layout ({"params_ema": ...}, BasicSR names), with one RRDB
    block of `features` channels instead of 23 of 64, random weights."""
    import torch

    gen = torch.Generator().manual_seed(0)
    state = {}

    def conv(name: str, inputs: int, outputs: int) -> None:
        state[f"{name}.weight"] = torch.randn(outputs, inputs, 3, 3, generator=gen) * 0.2
        state[f"{name}.bias"] = torch.randn(outputs, generator=gen) * 0.01

    conv("conv_first", 3, features)
    for j in (1, 2, 3):
        for k in range(1, 6):
            conv(f"body.0.rdb{j}.conv{k}", features + growth * (k - 1),
                 features if k == 5 else growth)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        conv(name, features, features)
    conv("conv_last", features, 3)
    path = folder / "RealESRGAN" / "RealESRGAN_x4plus.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": state}, path)
    return path

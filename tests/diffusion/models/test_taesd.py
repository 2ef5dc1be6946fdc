"""TAESD's decoder on gpustd against diffusers' AutoencoderTiny.decode on torch CPU (random,
narrow weights), from the files users have: the original layout as .safetensors and .pth, and
an AutoencoderTiny folder; latents of sizes that are no tile multiples."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="test-only reference (extra: reference)")
diffusers = pytest.importorskip("diffusers", reason="test-only reference (extra: reference)")

from safetensors.torch import save_file  # noqa: E402

from diffusion.loaders import WeightsError  # noqa: E402
from diffusion.models.taesd import load_taesd_decoder  # noqa: E402
from gpustd import Tensor  # noqa: E402


def _tiny(latent_channels: int, seed: int = 0):
    torch.manual_seed(seed)
    model = diffusers.AutoencoderTiny(
        in_channels=3, out_channels=3, latent_channels=latent_channels,
        encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1), num_decoder_blocks=(2, 1, 1, 1))
    with torch.no_grad():  # biases large enough that every conv's bias visibly matters
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(0.0, 0.3)
    return model.eval()


def _original_layout(model) -> dict:
    """madebyollin's file keys: the Sequential's indices, one past diffusers' (its Clamp)."""
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("decoder.layers."):
            index, _, rest = key[len("decoder.layers."):].partition(".")
            state[f"{int(index) + 1}.{rest}"] = value.contiguous()
    return state


@pytest.mark.parametrize("layout,channels,size", [
    ("safetensors", 4, (5, 7)), ("pth", 16, (3, 6)), ("folder", 4, (6, 5))])
def test_decoder_matches_autoencoder_tiny(tmp_path, layout, channels, size):
    model = _tiny(channels, seed=channels)
    if layout == "safetensors":
        path = tmp_path / "taesd_decoder.safetensors"
        save_file(_original_layout(model), str(path))
    elif layout == "pth":
        path = tmp_path / "taef1_decoder.pth"
        torch.save(_original_layout(model), path)
    else:
        path = tmp_path / "taesd"
        model.save_pretrained(path)
    latents = torch.randn(2, channels, *size, generator=torch.Generator().manual_seed(1)) * 2.5
    with torch.no_grad():
        want = model.decode(latents).sample.numpy()
    decoder = load_taesd_decoder(path)
    assert decoder.latent_channels == channels
    got = decoder(Tensor.from_numpy(latents.numpy())).numpy() * 2.0 - 1.0
    assert got.shape == (2, 3, 8 * size[0], 8 * size[1])
    assert np.abs(want).max() > 0.1 and np.std(want) > 0.01
    np.testing.assert_allclose(got, want, atol=2e-4, rtol=1e-4)


def test_bad_files_say_what_is_wrong(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_taesd_decoder(tmp_path / "taesd_decoder.pth")
    wrong = tmp_path / "other.safetensors"
    save_file({"conv_first.weight": torch.zeros(2, 2, 3, 3)}, str(wrong))
    with pytest.raises(WeightsError, match=r"other\.safetensors: not a TAESD decoder"):
        load_taesd_decoder(wrong)

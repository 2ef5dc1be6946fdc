"""The WebUI's VAEApprox ("Approx NN" previews) on gpustd against the same network in torch
(the WebUI's layer layout, written out here), random weights saved as the WebUI's file is
(`torch.save` of the state dict as model.pt), latents of sizes that are no tile multiples."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="test-only reference (extra: reference)")

from torch import nn  # noqa: E402

import gpucore  # noqa: E402
from diffusion.loaders import WeightsError  # noqa: E402
from diffusion.models.vae_approx import load_vae_approx, vae_approx_name  # noqa: E402
from gpustd import Tensor  # noqa: E402


class _TorchVAEApprox(nn.Module):
    """The WebUI's modules/sd_vae_approx.py VAEApprox: its attribute names are the file's keys."""

    def __init__(self, latent_channels: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(latent_channels, 8, (7, 7))
        self.conv2 = nn.Conv2d(8, 16, (5, 5))
        self.conv3 = nn.Conv2d(16, 32, (3, 3))
        self.conv4 = nn.Conv2d(32, 64, (3, 3))
        self.conv5 = nn.Conv2d(64, 32, (3, 3))
        self.conv6 = nn.Conv2d(32, 16, (3, 3))
        self.conv7 = nn.Conv2d(16, 8, (3, 3))
        self.conv8 = nn.Conv2d(8, 3, (3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.interpolate(x, (x.shape[2] * 2, x.shape[3] * 2))
        x = nn.functional.pad(x, (11, 11, 11, 11))
        for layer in (self.conv1, self.conv2, self.conv3, self.conv4, self.conv5, self.conv6,
                      self.conv7, self.conv8):
            x = nn.functional.leaky_relu(layer(x), 0.1)
        return x


def _model(channels: int, seed: int) -> _TorchVAEApprox:
    torch.manual_seed(seed)
    model = _TorchVAEApprox(channels)
    with torch.no_grad():  # He-scaled weights, so that the latents reach the picture; biases
        for layer in model.children():  # large enough to matter
            fan_in = layer.weight[0].numel()
            layer.weight.normal_(0.0, (2.0 / fan_in) ** 0.5)
            layer.bias.normal_(0.0, 0.1)
    return model.eval()


pytestmark = pytest.mark.skipif(not gpucore.devices(), reason="no GPU adapter present: install "
                                "mesa-vulkan-drivers (see README)")


@pytest.mark.parametrize("channels,size", [(4, (5, 7)), (16, (3, 6))])
def test_vae_approx_matches_the_webui_network(tmp_path, channels, size):
    model = _model(channels, seed=channels)
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    latents = torch.randn(2, channels, *size, generator=torch.Generator().manual_seed(1)) * 2.5
    with torch.no_grad():
        want = model(latents).numpy()
    approx = load_vae_approx(path)
    assert approx.latent_channels == channels
    got = approx(Tensor.from_numpy(latents.numpy())).numpy()
    assert got.shape == (2, 3, 2 * size[0], 2 * size[1])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
    # the input matters: other latents, another picture
    assert np.abs(want - model(latents.flip(0)).detach().numpy()).max() > 0.1 * np.abs(want).max()


def test_vae_approx_refuses_a_foreign_file_in_one_line(tmp_path):
    path = tmp_path / "vaeapprox-sdxl.pt"
    state = _model(4, seed=0).state_dict()
    del state["conv8.bias"]
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"vaeapprox-sdxl\.pt: .*no conv8\.bias"):
        load_vae_approx(path)
    state = _model(4, seed=0).state_dict()
    state["conv3.weight"] = torch.zeros(32, 8, 3, 3)
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"conv3\.weight has shape"):
        load_vae_approx(path)
    with pytest.raises(WeightsError, match="not found"):
        load_vae_approx(tmp_path / "model.pt")


@pytest.mark.nodevice
def test_vae_approx_files_are_named_as_the_webui():
    assert [vae_approx_name(s) for s in ("sd1", "sd2", "sdxl", "sd3", "flux")] == [
        "model.pt", "model.pt", "vaeapprox-sdxl.pt", "vaeapprox-sd3.pt", None]


def test_approx_nn_previews_as_the_webui_draws_them(tmp_path, caplog):
    from diffusion.server.previews import Previews

    model = _model(4, seed=3)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    previews = Previews(tmp_path)
    previews.configure({"show_progress_type": "Approx NN"})
    latents = np.random.default_rng(2).standard_normal((2, 4, 6, 5)) * 2.0
    device = gpucore.default_device()
    got = previews.picture(latents, latent_space="sd2", device=device)
    with torch.no_grad():  # the WebUI's single_sample_to_image of the first latent
        image = model(torch.from_numpy(latents[:1]).float())[0] * 0.5 + 0.5
    want = (255.0 * image.clamp(0.0, 1.0).permute(1, 2, 0)).to(torch.uint8).numpy()
    assert got.shape == (12, 10, 3) and got.dtype == np.uint8
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1  # float error at a step
    assert len(np.unique(want)) > 50  # the picture is not a flat colour
    # SDXL's file is missing: Approx cheap (None), said once with the file and the folder
    with caplog.at_level("WARNING"):
        assert previews.picture(latents, latent_space="sdxl", device=device) is None
        assert previews.picture(latents, latent_space="sdxl", device=device) is None
        assert previews.picture(latents, latent_space="flux", device=device) is None
    said = [record.getMessage() for record in caplog.records]
    assert len(said) == 2 and "vaeapprox-sdxl.pt" in said[0] and str(tmp_path) in said[0]
    assert "Approx cheap" in said[0] and "flux" in said[1]

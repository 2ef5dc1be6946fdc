"""The WebUI's "Approx cheap" live preview: latents to RGB by one linear map per latent space
(the WebUI's `sd_vae_approx.cheap_approximation`), a picture of the latents' size (1/8 of the
image's) drawn on the CPU in a fraction of a millisecond.

    picture = cheap_picture(x0, latent_space="sdxl")   # the first latent, (h, w, 3) uint8

The numbers, by the model's latent space (`Capabilities.latent_space`), in the model's own
latent space (scaled and shifted as the denoiser sees it):

- "sd1", "sd2", "sdxl", "sd3" (16 channels): the WebUI's (modules/sd_vae_approx.py);
- "flux", "chroma" (FLUX.1's VAE, also Z-Image's): Forge's (its FLUX latent format's
  `latent_rgb_factors`, which the WebUI took over for FLUX.1), no bias;
- "flux2": ComfyUI's FLUX.2 latent format: 32 VAE channels and a bias, applied after the
  transformer's 2x2 patches (128 channels) are put back in place;
- "qwen-image": ComfyUI's Wan 2.1 latent format with its bias (Qwen-Image's VAE is Wan 2.1's
  image VAE, its latents normalized per channel alike); "wan" too (ChronoEdit's latents,
  that VAE's);
- "wan2.2": ComfyUI's Wan 2.2 latent format with its bias (Wan 2.2's 48-channel VAE, Bria
  FIBO's latents).

Any other space (or latents whose channels do not fit its table) draws with SD 1.x's matrix
on its first four channels, as every family did before: "cogview4" among them (CogView4's VAE
is CogView3's 16-channel one, not FLUX.1's, and no numbers for it are published; fitting them
needs the real VAE). numpy: `einsum("lxy,lr->rxy")` plus
the bias, then the WebUI's bytes, `uint8(clip(x * 0.5 + 0.5, 0, 1) * 255)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .vae_flux2 import unpatchify

__all__ = ["LATENT_RGB", "LatentRGB", "cheap_approximation", "cheap_picture"]


@dataclass(frozen=True)
class LatentRGB:
    """One latent space's map: `factors` (channels, 3) rows of R, G, B weights, an optional
    `bias` (3,), and `patch`: the latents hold patch x patch pixels' channels (FLUX.2: 2)."""

    factors: tuple[tuple[float, float, float], ...]
    bias: tuple[float, float, float] | None = None
    patch: int = 1

    @property
    def channels(self) -> int:
        """The latents' channel count this map reads (patches included)."""
        return len(self.factors) * self.patch * self.patch


_SD = LatentRGB(((0.298, 0.207, 0.208), (0.187, 0.286, 0.173), (-0.158, 0.189, 0.264),
                 (-0.184, -0.271, -0.473)))
_SDXL = LatentRGB(((0.3448, 0.4168, 0.4395), (-0.1953, -0.0290, 0.0250),
                   (0.1074, 0.0886, -0.0163), (-0.3730, -0.2499, -0.2088)))
_SD3 = LatentRGB((
    (-0.0645, 0.0177, 0.1052), (0.0028, 0.0312, 0.0650), (0.1848, 0.0762, 0.0360),
    (0.0944, 0.0360, 0.0889), (0.0897, 0.0506, -0.0364), (-0.0020, 0.1203, 0.0284),
    (0.0855, 0.0118, 0.0283), (-0.0539, 0.0658, 0.1047), (-0.0057, 0.0116, 0.0700),
    (-0.0412, 0.0281, -0.0039), (0.1106, 0.1171, 0.1220), (-0.0248, 0.0682, -0.0481),
    (0.0815, 0.0846, 0.1207), (-0.0120, -0.0055, -0.0867), (-0.0749, -0.0634, -0.0456),
    (-0.1418, -0.1457, -0.1259)))
_FLUX = LatentRGB((
    (-0.0404, 0.0159, 0.0609), (0.0043, 0.0298, 0.0850), (0.0328, -0.0749, -0.0503),
    (-0.0245, 0.0085, 0.0549), (0.0966, 0.0894, 0.0530), (0.0035, 0.0399, 0.0123),
    (0.0583, 0.1184, 0.1262), (-0.0191, -0.0206, -0.0306), (-0.0324, 0.0055, 0.1001),
    (0.0955, 0.0659, -0.0545), (-0.0504, 0.0231, -0.0013), (0.0500, -0.0008, -0.0088),
    (0.0982, 0.0941, 0.0976), (-0.1233, -0.0280, -0.0897), (-0.0005, -0.0530, -0.0020),
    (-0.1273, -0.0932, -0.0680)))
_FLUX2 = LatentRGB((
    (0.0058, 0.0113, 0.0073), (0.0495, 0.0443, 0.0836), (-0.0099, 0.0096, 0.0644),
    (0.2144, 0.3009, 0.3652), (0.0166, -0.0039, -0.0054), (0.0157, 0.0103, -0.0160),
    (-0.0398, 0.0902, -0.0235), (-0.0052, 0.0095, 0.0109), (-0.3527, -0.2712, -0.1666),
    (-0.0301, -0.0356, -0.0180), (-0.0107, 0.0078, 0.0013), (0.0746, 0.0090, -0.0941),
    (0.0156, 0.0169, 0.0070), (-0.0034, -0.0040, -0.0114), (0.0032, 0.0181, 0.0080),
    (-0.0939, -0.0008, 0.0186), (0.0018, 0.0043, 0.0104), (0.0284, 0.0056, -0.0127),
    (-0.0024, -0.0022, -0.0030), (0.1207, -0.0026, 0.0065), (0.0128, 0.0101, 0.0142),
    (0.0137, -0.0072, -0.0007), (0.0095, 0.0092, -0.0059), (0.0000, -0.0077, -0.0049),
    (-0.0465, -0.0204, -0.0312), (0.0095, 0.0012, -0.0066), (0.0290, -0.0034, 0.0025),
    (0.0220, 0.0169, -0.0048), (-0.0332, -0.0457, -0.0468), (-0.0085, 0.0389, 0.0609),
    (-0.0076, 0.0003, -0.0043), (-0.0111, -0.0460, -0.0614)),
    bias=(-0.0329, -0.0718, -0.0851), patch=2)
_WAN21 = LatentRGB((
    (-0.1299, -0.1692, 0.2932), (0.0671, 0.0406, 0.0442), (0.3568, 0.2548, 0.1747),
    (0.0372, 0.2344, 0.1420), (0.0313, 0.0189, -0.0328), (0.0296, -0.0956, -0.0665),
    (-0.3477, -0.4059, -0.2925), (0.0166, 0.1902, 0.1975), (-0.0412, 0.0267, -0.1364),
    (-0.1293, 0.0740, 0.1636), (0.0680, 0.3019, 0.1128), (0.0032, 0.0581, 0.0639),
    (-0.1251, 0.0927, 0.1699), (0.0060, -0.0633, 0.0005), (0.3477, 0.2275, 0.2950),
    (0.1984, 0.0913, 0.1861)),
    bias=(-0.1835, -0.0868, -0.3360))

# ComfyUI's Wan22 latent format (Wan 2.2 TI2V 5B's 48-channel VAE; Bria FIBO's latents)
_WAN22 = LatentRGB((
    (0.0119, 0.0103, 0.0046), (-0.1062, -0.0504, 0.0165), (0.0140, 0.0409, 0.0491),
    (-0.0813, -0.0677, 0.0607), (0.0656, 0.0851, 0.0808), (0.0264, 0.0463, 0.0912),
    (0.0295, 0.0326, 0.0590), (-0.0244, -0.0270, 0.0025), (0.0443, -0.0102, 0.0288),
    (-0.0465, -0.0090, -0.0205), (0.0359, 0.0236, 0.0082), (-0.0776, 0.0854, 0.1048),
    (0.0564, 0.0264, 0.0561), (0.0006, 0.0594, 0.0418), (-0.0319, -0.0542, -0.0637),
    (-0.0268, 0.0024, 0.0260), (0.0539, 0.0265, 0.0358), (-0.0359, -0.0312, -0.0287),
    (-0.0285, -0.1032, -0.1237), (0.1041, 0.0537, 0.0622), (-0.0086, -0.0374, -0.0051),
    (0.0390, 0.0670, 0.2863), (0.0069, 0.0144, 0.0082), (0.0006, -0.0167, 0.0079),
    (0.0313, -0.0574, -0.0232), (-0.1454, -0.0902, -0.0481), (0.0714, 0.0827, 0.0447),
    (-0.0304, -0.0574, -0.0196), (0.0401, 0.0384, 0.0204), (-0.0758, -0.0297, -0.0014),
    (0.0568, 0.1307, 0.1372), (-0.0055, -0.0310, -0.0380), (0.0239, -0.0305, 0.0325),
    (-0.0663, -0.0673, -0.0140), (-0.0416, -0.0047, -0.0023), (0.0166, 0.0112, -0.0093),
    (-0.0211, 0.0011, 0.0331), (0.1833, 0.1466, 0.2250), (-0.0368, 0.0370, 0.0295),
    (-0.3441, -0.3543, -0.2008), (-0.0479, -0.0489, -0.0420), (-0.0660, -0.0153, 0.0800),
    (-0.0101, 0.0068, 0.0156), (-0.0690, -0.0452, -0.0927), (-0.0145, 0.0041, 0.0015),
    (0.0421, 0.0451, 0.0373), (0.0504, -0.0483, -0.0356), (-0.0837, 0.0168, 0.0055)),
    bias=(0.0317, -0.0878, -0.1388))

LATENT_RGB: dict[str, LatentRGB] = {
    "sd1": _SD, "sd2": _SD, "sdxl": _SDXL, "sd3": _SD3, "flux": _FLUX, "chroma": _FLUX,
    "flux2": _FLUX2, "qwen-image": _WAN21, "wan": _WAN21, "wan2.2": _WAN22}
"""The Approx cheap map of each latent space that has published numbers (module docstring)."""


def cheap_approximation(latent: np.ndarray, latent_space: str) -> np.ndarray:
    """One latent (C, h, w) as RGB (3, h, w) float32 in about [-1, 1] by its space's map
    (twice the size for FLUX.2's patches); SD 1.x's map on the first four channels where the
    space has none or its channels differ. torch: `torch.einsum("lxy,lr -> rxy", latent,
    factors)` (+ bias[:, None, None])."""
    latent = np.asarray(latent, np.float32)
    rgb = LATENT_RGB.get(latent_space)
    if rgb is None or latent.shape[0] != rgb.channels:
        rgb, latent = _SD, np.resize(latent, (4, *latent.shape[1:]))
    if rgb.patch > 1:
        latent = unpatchify(latent[None])[0]
    out = np.einsum("lxy,lr->rxy", latent, np.asarray(rgb.factors, np.float32))
    if rgb.bias is not None:
        out = out + np.asarray(rgb.bias, np.float32)[:, None, None]
    return out


def cheap_picture(latents: np.ndarray, latent_space: str) -> np.ndarray:
    """The first latent of `latents` (B, C, h, w) as an (h, w, 3) uint8 picture, in the
    WebUI's bytes (sd_samplers_common.single_sample_to_image: x * 0.5 + 0.5, clamped to
    [0, 1], times 255, truncated); NaN (an overflowed step, which the run then refuses)
    shows as black."""
    image = np.nan_to_num(cheap_approximation(latents[0], latent_space) * 0.5 + 0.5)
    return (np.clip(image, 0.0, 1.0) * 255.0).transpose(1, 2, 0).astype(np.uint8)

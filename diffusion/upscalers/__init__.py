"""Upscalers the WebUI offers: latent and image interpolation for hires fix (`interpolation`),
and model upscalers (ESRGAN, Real-ESRGAN, SRVGGNetCompact, SwinIR, HAT) from `--upscaler-dir`
(`models`), run over tiles (`tiled`)."""

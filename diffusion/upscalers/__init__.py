"""Upscalers the WebUI offers: latent and image interpolation for hires fix (`interpolation`)."""

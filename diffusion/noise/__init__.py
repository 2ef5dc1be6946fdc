"""Random numbers as the reference tools draw them: torch's CPU generator in numpy (`rng`) and
the WebUI's per-image noise with variation seeds (`image_noise`)."""

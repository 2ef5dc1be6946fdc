"""diffusion: Stable Diffusion on gpustd (filled in by the diffusion issue)."""

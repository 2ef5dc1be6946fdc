"""FLUX.1 and SD3 / 3.5 models: diffusers folders, single files, city96's GGUFs, and the
module files (VAE, CLIP, T5) Forge loads beside them. Builds on formats/ and keymaps/; never
imports sd/."""

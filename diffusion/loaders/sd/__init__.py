"""Stable Diffusion 1.x / 2.x / SDXL models: diffusers folders, single-file LDM / SGM
checkpoints, VAE files, and GGUFs (UNet-only or whole-model), as PipelineWeights. Builds on
formats/ and keymaps/; takes module files (a UNet-only GGUF's VAE and CLIP) through flow/'s
module_file and text_encoder_file."""

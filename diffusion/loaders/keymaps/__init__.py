"""Other layouts' tensor names and configs -> ours: the original LDM / SGM checkpoints'
(UNet, VAE, CLIP, OpenCLIP), the DiT checkpoints' (FLUX, SD3), llama.cpp's T5 names, a T5 or
UMT5 encoder's tensors (t5_keys), the tensors each diffusers config expects, and the configs a
file's shapes imply. Imports formats/ and diffusion.loaders.weights only."""

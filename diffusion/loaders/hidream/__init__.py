"""HiDream-I1 models: diffusers folders (`HiDreamImagePipeline`: transformer/, vae/ FLUX's
16-channel VAE, two Long-CLIPs, T5-XXL, Llama-3.1-8B-Instruct given with the folder or
apart, scheduler/). Builds on formats/ only."""

from .folder import FAMILY, HiDreamWeights, hidream_family, load_hidream_folder

__all__ = ["FAMILY", "HiDreamWeights", "hidream_family", "load_hidream_folder"]

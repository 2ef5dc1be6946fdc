"""HiDream-I1 models: diffusers folders (`HiDreamImagePipeline`: transformer/, vae/ FLUX's
16-channel VAE, two Long-CLIPs, T5-XXL, Llama-3.1-8B-Instruct given with the folder or
apart, scheduler/), and the transformer as one file in the original layout (ComfyUI's
hidream_i1_*.safetensors). Builds on formats/ and keymaps/ only."""

from .folder import FAMILY, HiDreamWeights, hidream_family, load_hidream_folder
from .transformer import hidream_file_family, is_hidream_file, load_hidream_transformer

__all__ = ["FAMILY", "HiDreamWeights", "hidream_family", "hidream_file_family",
           "is_hidream_file", "load_hidream_folder", "load_hidream_transformer"]

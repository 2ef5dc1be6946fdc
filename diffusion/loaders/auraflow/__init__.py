"""AuraFlow models: diffusers folders (`AuraFlowPipeline`: transformer/
AuraFlowTransformer2DModel, text_encoder/ UMT5 (EleutherAI's Pile-T5 XL), tokenizer/, vae/
SDXL's AutoencoderKL, scheduler/), and single-file transformers in fal's names (with a folder
for the rest). Builds on formats/ and keymaps/."""

from .file import auraflow_file_family, is_auraflow_file, load_auraflow_file
from .folder import AuraFlowWeights, auraflow_family, load_auraflow_folder, pad_token

__all__ = ["AuraFlowWeights", "auraflow_family", "auraflow_file_family", "is_auraflow_file",
           "load_auraflow_file", "load_auraflow_folder", "pad_token"]

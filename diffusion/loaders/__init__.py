"""Stable Diffusion model loaders: diffusers folders and single-file LDM checkpoints
(SD 1.x, SD 2.x, SD-Turbo, SDXL base / refiner / SDXL-Turbo).

    weights = load_pipeline_weights("v1-5-pruned-emaonly.safetensors", dtype="float16")
    weights.info                  # ModelInfo(family="sd1", inpainting=False, ...)
    weights.unet.config           # diffusers UNet2DConditionModel config dict
    for name in weights.unet:     # diffusers names: "down_blocks.0.resnets.0.conv1.weight", ...
        upload(name, weights.unet[name])   # read from disk now, dropped after the upload

SDXL (what a pipeline reads from PipelineWeights):
    info.family           "sd1" | "sd2" | "sdxl" | "sdxl-refiner"; info.turbo (SD-/SDXL-Turbo)
    text_encoder          CLIP ViT-L (None for the refiner)
    text_encoder_2        OpenCLIP bigG as CLIPTextModelWithProjection (config "architectures"
                          ["CLIPTextModelWithProjection"], tensor "text_projection.weight");
                          None for SD 1/2
    tokenizer_dir, tokenizer_2_dir   tokenizer folders (None for single files: the bundled
                          vocabulary; tokenizer 2 pads with "!", tokenizer 1 with <|endoftext|>)
    pipeline_config       model_index.json settings: force_zeros_for_empty_prompt,
                          requires_aesthetics_score (single files: diffusers' values)
    unet.config           addition_embed_type "text_time", addition_time_embed_dim,
                          projection_class_embeddings_input_dim, per-level
                          transformer_layers_per_block; vae.config scaling_factor 0.13025,
                          force_upcast True
    scheduler_config      the folder's, or diffusers' single-file choice (SDXL: Euler, leading;
                          Turbo: trailing, SDXL-Turbo Euler ancestral)
load_pipeline_weights(file, config=folder) takes a single file's configs from a diffusers folder.

Only file headers are read up front; each tensor is read when indexed and not kept, so loading
never holds two copies of the model in host memory. PyTorch files (.ckpt/.pt/.pth/.bin) are read
the same way (`TorchFile`) through a pickle reader that refuses every global outside the
tensor-rebuilding allowlist, so nothing in them runs.

Layout, in import order (a package imports only those above it):
    errors, reading, device_cast, weights   WeightsError; reading and casting on threads,
                        reading ahead; bfloat16 read into the staging memory and made
                        float16 on the GPU; TensorRef, ComponentWeights, PipelineWeights,
                        ModelInfo
    formats/            files as stored: safetensors, float8, torch pickles, GGUF (read,
                        write, Q4_K), a diffusers folder's configs and weight files
    keymaps/            other layouts' names and configs -> ours: LDM / SGM, DiT (FLUX, SD3,
                        Tencent's HunyuanImage / HunyuanVideo 1.5), llama.cpp's T5, T5 / UMT5
                        encoders' configs, expected keys
    component           a component's weights into its model, GGUF blocks kept quantized
    control/            ControlNet, T2I-Adapter, IP-Adapter, Depth Anything; their catalogue
    flow/               FLUX.1 and SD3: folders, single files, GGUFs, module files
    sd/                 SD 1.x / 2.x / SDXL: folders, single files, VAE files, GGUFs (a
                        UNet-only GGUF's module files are read through flow/)
    qwen_image/         Qwen-Image: diffusers folders (its Qwen2.5-VL's language model)
    hunyuan_video/      HunyuanVideo's VAE (Kandinsky 5 Video's): a folder's vae/, or the
                        original release's pytorch_model.pt
    hunyuan_video15/    HunyuanVideo 1.5: its VAE from a folder's vae/ or a diffusers-named
                        file
    hunyuanimage/       HunyuanImage 2.1: its transformer's diffusers folder or Tencent's
                        original single file
    hunyuan_video15/    HunyuanVideo 1.5: its transformer's diffusers folder, or Tencent's
                        original release (its folder or one file)
"""

from .errors import WeightsError
from .formats.safetensors import SafetensorsFile
from .formats.torch_file import TorchFile, open_weights_file
from .sd.pipeline import load_pipeline_weights
from .sd.vae import load_vae_weights
from .weights import ComponentWeights, ModelInfo, PipelineWeights

__all__ = [
    "ComponentWeights",
    "ModelInfo",
    "PipelineWeights",
    "SafetensorsFile",
    "TorchFile",
    "WeightsError",
    "load_pipeline_weights",
    "load_vae_weights",
    "open_weights_file",
]

"""Kandinsky 5 models: diffusers folders (`Kandinsky5T2IPipeline`: transformer/
Kandinsky5Transformer3DModel, text_encoder/ Qwen2.5-VL-7B's language model, tokenizer/ Qwen's,
text_encoder_2/ CLIP ViT-L/14, tokenizer_2/ CLIP's, vae/ FLUX's, scheduler/; Kandinsky 5
Video Lite's `Kandinsky5T2VPipeline` alike, its vae/ HunyuanVideo's) and single-file
transformers in kandinskylab's original layout (`kandinsky5lite_t2i.safetensors`, fp8,
scaled fp8 or GGUF). Builds on formats/, keymaps/ and qwen_image/'s Qwen readers; imports
neither sd/ nor flow/."""

from .file import is_kandinsky5_file, kandinsky5_file_family, load_kandinsky5_file
from .folder import (
    Kandinsky5Weights,
    kandinsky5_family,
    kandinsky5_video_family,
    load_kandinsky5_folder,
)

__all__ = ["Kandinsky5Weights", "is_kandinsky5_file", "kandinsky5_family",
           "kandinsky5_file_family", "kandinsky5_video_family", "load_kandinsky5_file",
           "load_kandinsky5_folder"]

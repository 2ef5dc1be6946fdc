"""JoyImage Edit models: diffusers folders (`JoyImageEditPipeline`: transformer/
JoyImageEditTransformer3DModel, text_encoder/ Qwen3-VL with its vision tower, tokenizer/
Qwen's, processor/ Qwen3-VL's picture sizes, vae/ Wan 2.1's AutoencoderKLWan, scheduler/).
Builds on formats/ and qwen_image/'s Qwen3-VL readers."""

from .folder import JoyImageWeights, joyimage_family, load_joyimage_folder

__all__ = ["JoyImageWeights", "joyimage_family", "load_joyimage_folder"]

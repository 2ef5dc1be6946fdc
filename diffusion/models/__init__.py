"""Stable Diffusion models on gpustd: CLIP and T5 text encoders, UNet, FLUX and SD3
transformers, VAE.

Plain classes whose attribute paths equal the diffusers / transformers checkpoint keys, so
loading weights is a walk over names (`load_state_dict`); configs are the `config.json` dicts.

| module | what |
|---|---|
| `clip` | CLIP's text transformer (`CLIPTextModel`, with projection for SDXL) |
| `unet`, `unet_blocks` | `UNet2DConditionModel` (SD 1/2, SDXL) and its down/mid/up blocks |
| `vae` | `AutoencoderKL`: encode to and decode from latents |
| `tiled_vae` | the VAE over tiles, for images larger than memory allows at once |
| `controlnet` | `ControlNetModel`: the UNet's input half reading a control image |
| `t2i_adapter` | `T2IAdapter` (full, full XL, light): control image to down-block features |
| `layers` | the pieces the UNet and VAE share: attention, ResNet blocks, down- and upsampling |
| `t5` | T5's encoder (`T5EncoderModel`, FLUX, SD3) and UMT5's (`UMT5EncoderModel`, Wan) |
| `llm` | a decoder-only LLM's hidden states (`LLMTextModel`, Qwen3): Z-Image's text encoder |
| `chatglm` | ChatGLM3-6B (`ChatGLMModel`): Kolors' text encoder |
| `flux` | `FluxTransformer2DModel` (FLUX.1 schnell and dev) |
| `sd3` | `SD3Transformer2DModel`, the MMDiT of SD3 and SD3.5 |
| `chroma` | `ChromaTransformer2DModel`: FLUX.1-schnell's blocks modulated by one approximator |
| `z_image` | `ZImageTransformer2DModel` (Z-Image Turbo and Base) |
| `flux2` | `Flux2Transformer2DModel` (FLUX.2 klein and dev) |
| `hunyuanimage` | `HunyuanImageTransformer2DModel` (HunyuanImage 2.1, and its distilled model) |
| `hunyuanimage_text` | its text stream: Qwen2.5-VL's states refined, ByT5's glyph projected |
| `vae_flux2` | `AutoencoderKLFlux2`: FLUX.2's 32-channel VAE, its batch-norm'd patchified latents |
| `qwen_image` | `QwenImageTransformer2DModel` (Qwen-Image) |
| `qwen_image_vae` | `AutoencoderKLQwenImage` on one frame: Qwen-Image's 16-channel causal VAE |
| `qwen_image21_vae` | `AutoencoderKLQwenImage21`: Qwen-Image 2.1's 64-channel RGBA VAE |
| `wan` | `WanTransformer3DModel` (Wan 2.1 text-to-video, Wan 2.2 TI2V 5B) |
| `wan_blocks`, `wan_embeddings` | its blocks and token segments; its time, text, image embedders |
| `wan_vae` | `AutoencoderKLWan`: Wan 2.1's and 2.2's video VAE over frames, chunked |
| `wan_vae_blocks`, `wan_vae_residual` | its causal 3D blocks; Wan 2.2's patches, residual blocks |
| `hunyuan_video_vae` | `AutoencoderKLHunyuanVideo`: HunyuanVideo's and Kandinsky 5 Video's VAE |
| `hunyuan_video_vae_blocks`, `hunyuan_video_vae_tiling` | its causal 3D blocks; diffusers' tiling |
| `ltx2` | `LTX2VideoTransformer3DModel`: LTX-2's audio-video transformer (and LTX-2.3's) |
| `ltx2_blocks`, `ltx2_rope`, `ltx2_time` | its two-stream blocks; rotary tables; time modulations |
| `dit_layers` | what FLUX and SD3 share: joint attention, the double-stream block, adaLN |
| `transformer_ops` | RMS norm, adaLN modulation, gated residuals, rotary embeddings |
| `step_cache` | step caching of the transformers' blocks: First Block Cache, MagCache, TeaCache |
| `esrgan`, `srvgg` | upscalers: ESRGAN/Real-ESRGAN's RRDBNet and Real-ESRGAN's SRVGGNetCompact |
| `taesd` | TAESD's tiny decoder (SD 1/2, SDXL, SD3, FLUX.1 files): latents to live previews |
| `vae_approx` | the WebUI's VAEApprox (`model.pt`, `vaeapprox-sdxl.pt`): "Approx NN" previews |
| `latent_rgb` | each latent space's latent-to-RGB matrix: "Approx cheap" previews |
| `blip`, `blip_text` | BLIP's captioner (Salesforce's names): a ViT, a BERT decoder reading it |

A new network family (ControlNet, ...) is a module of its own beside these.
"""

from .chroma import ChromaTransformer2DModel
from .clip import CLIPTextModel
from .flux import FluxTransformer2DModel
from .sd3 import SD3Transformer2DModel
from .t5 import T5EncoderModel
from .unet import UNet2DConditionModel
from .vae import AutoencoderKL

__all__ = [
    "AutoencoderKL", "CLIPTextModel", "ChromaTransformer2DModel", "FluxTransformer2DModel",
    "SD3Transformer2DModel", "T5EncoderModel", "UNet2DConditionModel",
]

"""The flow family: FLUX.1, SD 3/3.5, Z-Image, FLUX.2 klein and Qwen-Image: flow-matching
transformers.

| module | what |
|---|---|
| `flow_model` | `FlowModel`: the family's `Pipeline` (the registry's loader and defaults too) |
| `flow_passes` | `FlowModelPasses`: `FlowModel`'s passes, diffusers' loop or a WebUI sampler |
| `flux` | FLUX.1: diffusers' `FluxPipeline` |
| `sd3` | SD 3/3.5: diffusers' `StableDiffusion3Pipeline` |
| `z_image` | Z-Image (Turbo, Base): diffusers' `ZImagePipeline` |
| `z_image_model` | `ZImageModel`: `FlowModel` with Z-Image's CFG; its loader and defaults |
| `flux2` | FLUX.2 klein: diffusers' `Flux2KleinPipeline` |
| `flux2_model` | `Flux2Model`: `FlowModel` with klein's latents and decode; loader, defaults |
| `qwen_image` | Qwen-Image: diffusers' `QwenImagePipeline` |
| `qwen_image_model` | `QwenImageModel`: `FlowModel` with true CFG; its loader and defaults |
| `start` | what both share: `FlowStart`, `decode`, `encode_image`, `run_euler`, `load_parts` |
| `flow_sampling` | the WebUI's samplers on flow models (the one pass, `sampling.kdiffusion_pass`) |
| `flow_hires` | Forge's hires fix for flow models |
"""

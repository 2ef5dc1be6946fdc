"""The flow family: FLUX.1 and SD 3/3.5, flow-matching transformers.

| module | what |
|---|---|
| `flow_model` | `FlowModel`: the family's `Pipeline` (the registry's loader and defaults too) |
| `flux` | FLUX.1: diffusers' `FluxPipeline` |
| `sd3` | SD 3/3.5: diffusers' `StableDiffusion3Pipeline` |
| `start` | what both share: `FlowStart`, `decode`, `encode_image`, `run_euler`, `load_parts` |
| `flow_sampling` | the WebUI's samplers on flow models (the one pass, `sampling.kdiffusion_pass`) |
| `flow_hires` | Forge's hires fix for flow models |
"""
